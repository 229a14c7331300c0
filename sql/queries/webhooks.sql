-- Runtime SQL of the webhook app and the webhook drain (engine/webhooks/apply.py),
-- and the webhook dead letters: written by `dead_letter` below, retried by
-- sync.retry_webhook_v1 / sync.retry_dead (migrations/postgres/0008_webhook_dead_letters.sql).

-- name: enqueue
-- Dedupe and queue one verified event; true = queued, false = duplicate.
select sync.enqueue_webhook_v1($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)

-- name: claim
-- Lock the oldest webhook events no other drain holds; deleted after apply.
select id, link, side, source, event_id, topic, payload::text as payload
  from sync.queue
 where op = 'W'
 order by id
 limit $1
   for update skip locked

-- name: delete_claimed
-- Remove exactly the events this drain claimed and applied (or dead-lettered).
delete from sync.queue where op = 'W' and id = any($1::bigint[])

-- name: dead_letter
-- Record events that cannot be applied, keeping the payload for sync.retry_webhook_v1.
with dead as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
        as d(link, side, source, event_id, error, payload)
), letters as (
    insert into sync.dead_letter as l (link, source_side, key, error)
    select link, side, jsonb_build_object('source', source, 'event_id', event_id), error
      from dead
    on conflict (link, source_side, key) do update
       set error = excluded.error, last_seen = clock_timestamp(),
           attempts = l.attempts + 1, status = 'open', closed_at = null
)
update sync.webhook_events e
   set payload = d.payload::jsonb
  from dead d
 where e.source = d.source and e.event_id = d.event_id

-- name: count
-- Add one drained batch's outcomes to the per-source counters.
insert into sync.webhook_counters as c (source, applied, stale, dead, last_applied_at)
select source, applied, stale, dead, clock_timestamp()
  from unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) as t(source, applied, stale, dead)
on conflict (source) do update
   set applied = c.applied + excluded.applied,
       stale = c.stale + excluded.stale,
       dead = c.dead + excluded.dead,
       last_applied_at = excluded.last_applied_at

-- name: columns
-- Columns of one table (by quoted qualified name), in ordinal order.
select a.attname, format_type(a.atttypid, a.atttypmod)
  from pg_attribute a
 where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped
   and a.attgenerated = ''
 order by a.attnum

-- name: prune
-- Forget dedupe records older than the retention period.
select sync.prune_webhook_events_v1(make_interval(days => $1))

-- name: upsert
-- Template: insert or update one event's row from its JSON; no row returned = a newer row is stored (stale).
insert into {table} as cur ({cols})
select {cols} from jsonb_populate_record(null::{table}, $1)
    on conflict ({keys}) do update set {sets} {guard}
returning 1

-- name: upsert_guard
-- Template fragment of upsert: only a row at the same or an older version is overwritten.
where cur.{version} is null or cur.{version} <= excluded.{version}

-- name: delete
-- Template: delete one event's row; true = stale (nothing deleted while the row still exists).
with ev as (select * from jsonb_populate_record(null::{table}, $1)),
     gone as (delete from {table} as cur using ev where {match} {guard} returning 1)
select (select count(*) from gone) = 0
   and exists (select 1 from {table} as cur, ev where {match})

-- name: delete_guard
-- Template fragment of delete: only a row at the same or an older version is deleted.
and (ev.{version} is null or cur.{version} is null or cur.{version} <= ev.{version})
