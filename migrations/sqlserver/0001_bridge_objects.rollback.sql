-- Undo 0001_bridge_objects: the bridge's bookkeeping on this SQL Server peer.
-- Change tracking itself is switched off in code (autocommit), not here.
DROP TABLE [sync].[db_identity];
DROP TABLE [sync].[ct_cursor];
DROP TABLE [sync].[applied_batches];
DROP SCHEMA [sync];
