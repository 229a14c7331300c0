-- SQL of `syncbridge bench --only scaleout` (bridge/bench/scaleout.py): one table per link.

-- name: table
-- Template: one link's table, on both sides, dropped first (a previous run's).
drop table if exists {table} cascade;
create table {table} (id bigint primary key, payload jsonb not null)

-- name: fill
-- Template: rows lo to hi (the two parameters) of one link's table, in one transaction.
insert into {table} (id, payload) select g, {payload} from generate_series(%s::bigint, %s::bigint) g

-- name: count
-- Template: rows in one link's table.
select count(*) from {table}

-- name: clear
-- Template: empty one link's table (between measurements, both sides).
truncate {table}

-- name: reset_sync
-- Between measurements: the queue and the sink's batch records of the previous one.
delete from sync.queue; delete from sync.applied_batches; delete from sync.row_state

-- name: pause
-- Hub: hold a link while its backlog is written (sync.pause).
select sync.pause(%s, 'bench: backlog being written')

-- name: resume
-- Hub: let a link flow (sync.resume notifies the bridges).
select sync.resume(%s)

-- name: holders
-- Hub: how many links the bridges of the run hold (sync.bridges.links).
select coalesce(sum(cardinality(links)), 0), count(*) filter (where cardinality(links) > 0) from sync.bridges where role = 'active'
