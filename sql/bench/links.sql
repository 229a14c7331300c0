-- SQL of `syncbridge bench --only links` (bridge/bench/links.py): many tables of the shape
-- of bench_items (sql/bench/core.sql, created before this runs), one link each, and the
-- sink's arrival stamps of every row, so lag is read from one clock as in the latency part.

-- name: drop
-- Remove a previous run's link tables and arrival stamps (the capture triggers go with them).
do $$
declare t text;
begin
    for t in select tablename from pg_tables
              where schemaname = current_schema() and tablename like 'bench\_links\_%' loop
        execute format('drop table %I cascade', t);
    end loop;
end $$;
drop table if exists bench_link_arrivals;
drop function if exists bench_link_arrival()

-- name: table
-- Template: one link's table, the shape of bench_items (key, defaults and all).
create table {table} (like bench_items including all)

-- name: arrivals
-- Sink only: stamp each applied row with its link and the server's clock, statement-level.
create table bench_link_arrivals (link int, id bigint, written_at timestamptz,
                                  arrived_at timestamptz);
create function bench_link_arrival() returns trigger language plpgsql as $$
begin
    insert into bench_link_arrivals
    select tg_argv[0]::int, n.id, n.updated_at, clock_timestamp() from new_rows n;
    return null;
end $$

-- name: arrival_trigger
-- Template: the stamp trigger of one sink table; {link} is the link's number (a literal).
create trigger bench_link_arrival after insert on {table}
    referencing new table as new_rows for each statement execute function bench_link_arrival({link})

-- name: insert_rows
-- Template: rows lo to hi (the two parameters) of one link's table, one statement.
insert into {table} (id, account_id, status, amount, payload)
select g, 4, 'new', 1.5, {payload} from generate_series(%s::bigint, %s::bigint) g

-- name: truncate
-- Template: empty the link tables ({tables}: the list) before a run.
truncate {tables}

-- name: reset
-- Empty the sync state behind the link tables, and the sink's stamps (run on both sides).
delete from sync.queue; delete from sync.applied_batches; truncate bench_link_arrivals

-- name: count
-- Template: rows in one link's table.
select count(*) from {table}

-- name: arrived
-- Sink: rows stamped so far.
select count(*) from bench_link_arrivals

-- name: lag
-- Sink: rows, p50 and p99 and max commit-to-apply ms, first write to last apply s.
select count(*),
       percentile_disc(0.5) within group (order by ms),
       percentile_disc(0.99) within group (order by ms),
       max(ms),
       extract(epoch from max(arrived_at) - min(written_at))
  from (select arrived_at, written_at,
               extract(epoch from arrived_at - written_at) * 1000 as ms
          from bench_link_arrivals) s

-- name: batches
-- Sink: batches the bridge applied (sync.applied_batches keeps one row each).
select count(*) from sync.applied_batches

-- name: batch_gaps
-- Sink: median ms between one link's consecutive batches (how often each link gets its turn).
select percentile_disc(0.5) within group (order by gap)
  from (select extract(epoch from applied_at - lag(applied_at)
                       over (partition by link order by applied_at)) * 1000 as gap
          from sync.applied_batches) s
 where gap is not null
