-- Undo 0002_restore_record.
DROP INDEX applied_batches_applied_at ON [sync].[applied_batches];

ALTER TABLE [sync].[applied_batches] DROP CONSTRAINT applied_batches_pk;

ALTER TABLE [sync].[applied_batches] ADD CONSTRAINT applied_batches_pk PRIMARY KEY CLUSTERED (batch_id);

DROP TABLE [sync].[ct_client];
