drop function sync.resync(text, char);
drop view sync.check_status;
drop table sync.check_diffs;
drop table sync.check_runs;
drop table sync.backfill_runs;
