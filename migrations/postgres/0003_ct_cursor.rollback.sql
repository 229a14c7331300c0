-- Undo 0003_ct_cursor: stored SQL Server cursors are lost, so those links resync on next start.
drop table if exists sync.ct_cursor;
