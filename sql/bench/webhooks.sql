-- SQL of `syncbridge bench webhooks` (bridge/bench/webhooks.py): its scratch schema and cleanup.

-- name: setup
-- The scratch table the bench source's events are applied to.
create schema if not exists syncbridge_bench;
create table if not exists syncbridge_bench.events (
    id bigint primary key, body text, updated_at timestamptz)

-- name: cleanup
-- Remove everything the bench created: scratch schema, queued events, dedupe records, counters, dead letters.
drop schema if exists syncbridge_bench cascade;
delete from sync.queue where op = 'W' and source = 'bench';
delete from sync.webhook_events where source = 'bench';
delete from sync.webhook_counters where source = 'bench';
delete from sync.dead_letter where link = 'syncbridge_bench'
