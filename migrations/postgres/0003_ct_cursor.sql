-- depends: 0001_sync_schema
-- Change-tracking cursors of SQL Server sources, stored in the Postgres sink
-- in the same transaction as the rows applied from them (DESIGN: the sink
-- records what it applied). db_identity is the source's [sync].[db_identity]
-- id when the cursor was taken: a different id means the source was restored
-- and the link must be resynced, never resumed.
create table sync.ct_cursor (
    link        text not null,
    source_side char(1) not null check (source_side in ('a', 'b')),
    version     bigint not null,
    db_identity text,
    updated_at  timestamptz not null default clock_timestamp(),
    primary key (link, source_side)
);
