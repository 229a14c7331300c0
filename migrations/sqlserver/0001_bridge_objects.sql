-- The bridge's own objects on a SQL Server peer (run by yoyo with the mssql
-- backend in engine/mssql_yoyo.py). One statement per `;`, no GO: yoyo splits
-- on `;` and sends each statement as its own batch, so CREATE SCHEMA stands
-- alone as SQL Server requires.
-- Database-level settings (ALLOW_SNAPSHOT_ISOLATION, CHANGE_TRACKING) are NOT
-- here: ALTER DATABASE cannot run inside a transaction (Msg 226) and the
-- retention comes from the config, so `syncbridge` runs them in code with
-- autocommit (engine/mssql_peer.py: install_capture, run by `syncbridge install`).

CREATE SCHEMA [sync];

-- Every batch this peer applied as a sink, written in the same transaction as
-- the rows: a batch id found here after a crash is only cleaned up at the
-- source, never applied again.
CREATE TABLE [sync].[applied_batches] (
    batch_id    uniqueidentifier NOT NULL CONSTRAINT applied_batches_pk PRIMARY KEY,
    link        nvarchar(128) NOT NULL,
    source_side nchar(1) NOT NULL CONSTRAINT applied_batches_side CHECK (source_side IN (N'a', N'b')),
    signals     int NOT NULL,
    upserts     int NOT NULL,
    deletes     int NOT NULL,
    applied_at  datetime2(6) NOT NULL CONSTRAINT applied_batches_at DEFAULT SYSUTCDATETIME()
);

CREATE INDEX applied_batches_link ON [sync].[applied_batches] (link, applied_at);

-- The change-tracking cursor of a SQL Server SOURCE whose SINK is this SQL
-- Server peer (a SQL Server to SQL Server link). When the sink is Postgres the
-- cursor lives in the Postgres sync.ct_cursor instead (postgres 0003).
CREATE TABLE [sync].[ct_cursor] (
    link        nvarchar(128) NOT NULL,
    source_side nchar(1) NOT NULL CONSTRAINT ct_cursor_side CHECK (source_side IN (N'a', N'b')),
    version     bigint NOT NULL,
    db_identity nvarchar(64) NULL,
    updated_at  datetime2(6) NOT NULL CONSTRAINT ct_cursor_at DEFAULT SYSUTCDATETIME(),
    CONSTRAINT ct_cursor_pk PRIMARY KEY (link, source_side)
);

-- This database's identity (reference §1.3): CT versions restart after a
-- restore to an earlier point, and an old cursor would still validate. Every
-- stored cursor carries this id; after a restore run
--   UPDATE [sync].[db_identity] SET id = NEWID();
-- and every link from this peer is resynced instead of silently diverging.
CREATE TABLE [sync].[db_identity] (
    id         uniqueidentifier NOT NULL CONSTRAINT db_identity_id DEFAULT NEWID(),
    created_at datetime2(6) NOT NULL CONSTRAINT db_identity_at DEFAULT SYSUTCDATETIME(),
    CONSTRAINT db_identity_pk PRIMARY KEY (id)
);

INSERT [sync].[db_identity] (id) VALUES (NEWID());
