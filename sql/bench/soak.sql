-- SQL of `syncbridge bench --only soak` (bridge/bench/soak.py): steady upserts on bench_items.

-- name: upsert
-- Template: rows lo to hi (the two parameters) inserted, or their payload and stamp updated.
insert into bench_items (id, account_id, status, amount, payload)
select g, mod(g, 1000), 'soak', mod(g, 100000) / 100.0, {payload}
  from generate_series(%s::bigint, %s::bigint) g
    on conflict (id) do update set payload = excluded.payload, updated_at = clock_timestamp()

