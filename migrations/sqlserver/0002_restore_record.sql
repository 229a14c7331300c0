-- depends: 0001_bridge_objects
-- Issue 18: restore detection on a change-tracking source, and an applied-batch
-- record that does not fragment and is pruned.

-- Microsoft's "Change Tracking and Data Restore" (option 2): each link records
-- on its SOURCE the CT version it is about to store at its sink, just before
-- the sink commits it (engine/mssql_peer.py: record_client_version). After a
-- restore, log-shipping failover or failover to an asynchronous secondary to
-- an earlier point, this record comes back older than the sink's cursor, and
-- the link resyncs instead of silently diverging.
CREATE TABLE [sync].[ct_client] (
    link        nvarchar(128) NOT NULL,
    source_side nchar(1) NOT NULL CONSTRAINT ct_client_side CHECK (source_side IN (N'a', N'b')),
    version     bigint NOT NULL,
    updated_at  datetime2(6) NOT NULL CONSTRAINT ct_client_at DEFAULT SYSUTCDATETIME(),
    CONSTRAINT ct_client_pk PRIMARY KEY (link, source_side)
);

-- Random uuid batch ids as the clustered key split pages on every insert: keep
-- the id unique but nonclustered, and cluster on the time the prune deletes by.
ALTER TABLE [sync].[applied_batches] DROP CONSTRAINT applied_batches_pk;

ALTER TABLE [sync].[applied_batches] ADD CONSTRAINT applied_batches_pk PRIMARY KEY NONCLUSTERED (batch_id);

CREATE CLUSTERED INDEX applied_batches_applied_at ON [sync].[applied_batches] (applied_at);
