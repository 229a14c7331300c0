-- SQL of `syncbridge bench-check` (bridge/bench/check.py); {payload} as in sql/bench/core.sql.

-- name: load
-- Template: rows 1 to n (the one parameter), with distinct, increasing updated_at stamps.
insert into bench_items (id, account_id, status, amount, payload, updated_at)
select g, mod(g, 1000), 'new', mod(g, 100000) / 100.0, {payload},
       '2026-01-01 00:00+00'::timestamptz + g * interval '1 millisecond'
  from generate_series(1, %s) g

-- name: arrivals
-- Target only: stamp the arrival of live rows (ids from bench_seq), not of backfilled ones.
create table bench_arrivals (id bigint, written_at timestamptz, arrived_at timestamptz);
create function bench_arrival() returns trigger language plpgsql as $$
begin
    insert into public.bench_arrivals  -- qualified: pg_dump output sets search_path to empty
    select n.id, n.updated_at, clock_timestamp() from new_rows n where n.id >= 10000001;
    return null;
end $$;
create trigger bench_arrival_ins after insert on bench_items
    referencing new table as new_rows for each statement execute function bench_arrival();
