-- SQL of the native logical replication side of `syncbridge bench --compare logical`
-- (bridge/bench/native.py).

-- name: arrivals
-- Subscriber: a row-level arrival stamp (apply workers fire row triggers only, and only
-- ENABLE ALWAYS / REPLICA ones), left disabled until the latency workload.
create table bench_arrivals (id bigint, written_at timestamptz, arrived_at timestamptz);
create function bench_arrival_row() returns trigger language plpgsql as $$
begin
    insert into public.bench_arrivals values (new.id, new.updated_at, clock_timestamp());
    return null;
end $$;
create trigger bench_arrival_row after insert or update on bench_items
    for each row execute function bench_arrival_row();
alter table bench_items disable trigger bench_arrival_row;

-- name: publication
-- Publisher: every change of bench_items.
create publication bench_pub for table bench_items
  with (publish = 'insert, update, delete, truncate')

-- name: subscription
-- Template: the subscriber's subscription to bench_pub on the publisher, streaming only new changes.
create subscription {sub} connection {conninfo} publication bench_pub
  with (copy_data = false)
