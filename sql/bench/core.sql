-- SQL of `syncbridge bench` (bridge/bench/core.py), shared by the compare (logical.py,
-- native.py) and bench-check (check.py). Templates take {payload}: the `payload` expression
-- rendered for their row number (~200 bytes of jsonb per row).

-- name: schema
-- The benchmarked table, on both sides, and the sequence pgbench's inserts draw ids from.
create table bench_items (
    id         bigint primary key,
    account_id int not null,
    status     text not null,
    amount     numeric(12,2) not null,
    payload    jsonb not null,
    updated_at timestamptz not null default clock_timestamp()
);
create sequence bench_seq start 10000001;

-- name: drop
-- Remove a previous run's tables and the arrival trigger's function (before `schema`).
drop table if exists bench_items cascade; drop sequence if exists bench_seq; drop table if exists bench_arrivals;
drop function if exists bench_arrival()

-- name: arrivals
-- Target only: stamp each applied row's arrival, statement-level, with the server's clock;
create table bench_arrivals (id bigint, written_at timestamptz, arrived_at timestamptz);
create function bench_arrival() returns trigger language plpgsql as $$
begin
    insert into bench_arrivals select n.id, n.updated_at, clock_timestamp() from new_rows n;
    return null;
end $$;
create trigger bench_arrival_ins after insert on bench_items
    referencing new table as new_rows for each statement execute function bench_arrival();
create trigger bench_arrival_upd after update on bench_items
    referencing new table as new_rows for each statement execute function bench_arrival();
-- off but in the latency workload (core.py Bench.latency), as the compare's logical side has it
alter table bench_items disable trigger bench_arrival_ins, disable trigger bench_arrival_upd;

-- name: row_there
-- Is the given row on the target: the timed parts' look (core.py Bench._wait_rows), an index probe.
select exists (select 1 from bench_items where id = %s)

-- name: payload
-- Template fragment: the jsonb payload of row number g (a column or a parameter).
jsonb_build_object('sku', 'SKU-' || {g}, 'qty', mod({g}, 17), 'tags', jsonb_build_array('red', 'large', 'gift'), 'note', repeat('x', 120))

-- name: insert_100
-- Template: rows lo to hi (the two parameters, at most 100 rows) as one transaction.
insert into bench_items (id, account_id, status, amount, payload)
select g, mod(g, 1000), 'new', mod(g, 100000) / 100.0, {payload}
  from generate_series(%s::bigint, %s::bigint) g

-- name: seed_latency
-- Template: 1,000 rows of account 1 that the latency run updates.
insert into bench_items (id, account_id, status, amount, payload)
select g, 1, 'seed', 1, {payload} from generate_series(1, 1000) g

-- name: seed_overhead
-- Template: 100,000 rows that pgbench's updates pick from.
insert into bench_items (id, account_id, status, amount, payload)
select g, mod(g, 1000), 'seed', 1, {payload} from generate_series(1, 100000) g

-- name: paced_insert
-- Template: one latency insert; the row id is passed three times (id and payload).
insert into bench_items (id, account_id, status, amount, payload)
select %s, 2, 'new', 9.99, {payload}

-- name: pgbench_insert
-- Template: pgbench's insert script, one row from bench_seq.
insert into bench_items (id, account_id, status, amount, payload)
select nextval('bench_seq'), 3, 'new', 1.5, {payload};

-- name: reset
-- Empty the table and the sync state behind it; row_state too, or every re-inserted row of a two-way link is a (correctly detected) conflict.
truncate bench_items; delete from sync.queue; delete from sync.applied_batches; delete from sync.row_state; delete from sync.conflicts
