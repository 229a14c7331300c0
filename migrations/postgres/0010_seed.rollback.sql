-- Remove the seed bookkeeping of 0010.
drop table sync.seed_chunks;
drop table sync.seed_runs;
