-- depends: 0002_restore_record
-- Issue 18 item 15: two-way links with a SQL Server side are conflict-checked
-- like Postgres links. A sink keeps, per key, the image last synced (its base)
-- and updates it in the same transaction as the rows it applies; this is the
-- SQL Server sink's copy (the Postgres side keeps hers in sync.row_state).

-- The base of each key of a two-way link, keyed and named as on side a. [key]
-- is the a-named key as Postgres prints it (jsonb text) and image the row as
-- a JSON object of the columns' Postgres text representations, null for an
-- absent row: the same texts on both sides, so comparing them compares values
-- exactly. A key text has no bound, so rows are found by its SHA-256
-- (HASHBYTES of the nvarchar text, computed in every statement alike).
-- known = 0: the key's sides differed when the base was recorded (install), so
-- nothing tells which side changed it; its next change is applied (no_base).
CREATE TABLE [sync].[row_state] (
    link      nvarchar(128) NOT NULL,
    key_hash  binary(32) NOT NULL,
    [key]     nvarchar(max) NOT NULL,
    image     nvarchar(max) NULL,
    known     bit NOT NULL CONSTRAINT row_state_known DEFAULT 1,
    synced_at datetime2(6) NOT NULL CONSTRAINT row_state_at DEFAULT SYSUTCDATETIME(),
    CONSTRAINT row_state_pk PRIMARY KEY (link, key_hash)
);

-- Keys whose SQL Server row must be sent to the other side unchecked (the
-- sink's row won a conflict, a merged row was written here, or an operator
-- chose this side with sync.resolve_conflict): written in the apply batch's
-- transaction, read by the link's change-tracking drain, deleted once that row
-- is committed at the other side. [key] is the key in this side's column names
-- as a JSON object (the format of sync.dead_letter keys).
CREATE TABLE [sync].[resend] (
    link        nvarchar(128) NOT NULL,
    source_side nchar(1) NOT NULL CONSTRAINT resend_side CHECK (source_side IN (N'a', N'b')),
    key_hash    binary(32) NOT NULL,
    [key]       nvarchar(max) NOT NULL,
    queued_at   datetime2(6) NOT NULL CONSTRAINT resend_at DEFAULT SYSUTCDATETIME(),
    CONSTRAINT resend_pk PRIMARY KEY (link, source_side, key_hash)
);
