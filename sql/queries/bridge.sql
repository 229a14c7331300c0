-- Runtime SQL of the bridge's drain loop (asyncpg, $n parameters).
-- Source = the database whose sync.queue holds the signals; sink = the one
-- written; hub = the one holding sync.status.

-- name: claim
-- Claim the oldest visible, unclaimed key signals of one link side as a new batch.
with c as (
    select id from sync.queue
     where link = $1 and side = $2 and batch_id is null and op <> 'W'
       and (retry_at is null or retry_at <= clock_timestamp())
     order by id
     limit $3
       for update skip locked
)
update sync.queue q set batch_id = $4 from c where q.id = c.id
returning q.id, q.op, q.key::text as key, q.attempts

-- name: pending_batches
-- Batches claimed by an earlier run that were never finished (crash recovery).
select distinct batch_id from sync.queue
 where link = $1 and side = $2 and batch_id is not null and op <> 'W'

-- name: batch_signals
-- The signals of one claimed batch, to re-apply it after a crash.
select id, op, key::text as key, attempts from sync.queue where batch_id = $1 order by id

-- name: finish_batch
-- The sink committed the batch: drop exactly its claimed signals.
delete from sync.queue where batch_id = $1

-- name: defer_keys
-- Give signals of keys the sink could not take yet back to the queue, with backoff.
update sync.queue
   set batch_id = null, attempts = attempts + 1,
       retry_at = clock_timestamp() + make_interval(secs => least(60, $3 * power(2, attempts)))
 where batch_id = $1 and key = any($2::jsonb[])

-- name: queue_depth
-- Queued signals of one link side and the age of the oldest (lag).
select count(*) as queued, min(enqueued_at) as oldest
  from sync.queue where link = $1 and side = $2 and op <> 'W'

-- name: set_origin
-- Tag this transaction's writes so capture does not send them back.
select set_config('syncbridge.origin', $1, true)

-- name: batch_record
-- The sink's record of an applied batch (null when not applied).
select dead::text from sync.applied_batches where batch_id = $1

-- name: record_batch
-- Written in the same sink transaction as the batch's rows.
insert into sync.applied_batches (batch_id, link, source_side, signals, upserts, deletes, dead)
values ($1, $2, $3, $4, $5, $6, $7::jsonb)

-- name: prune_applied
-- Keep a week of applied-batch records on the sink.
delete from sync.applied_batches where applied_at < clock_timestamp() - interval '7 days'

-- name: report_batch
-- Hub: count an applied batch for sync.status.
with log as (
    insert into sync.apply_log (link, source_side, rows) values ($1, $2, $3)
)
insert into sync.link_state as s (link, source_side, last_applied_at, applied_total)
values ($1, $2, clock_timestamp(), $3)
on conflict (link, source_side) do update
   set last_applied_at = excluded.last_applied_at,
       applied_total = s.applied_total + excluded.applied_total

-- name: report_depth
-- Hub: the latest queue depth sample of one link side.
insert into sync.link_state as s (link, source_side, queued, oldest_queued_at, sampled_at)
values ($1, $2, $3, $4, clock_timestamp())
on conflict (link, source_side) do update
   set queued = excluded.queued, oldest_queued_at = excluded.oldest_queued_at,
       sampled_at = excluded.sampled_at

-- name: report_error
-- Hub: a failed attempt (it will be retried) of one link side.
insert into sync.link_state as s (link, source_side, retries, last_error, last_error_at)
values ($1, $2, 1, $3, clock_timestamp())
on conflict (link, source_side) do update
   set retries = s.retries + 1, last_error = excluded.last_error,
       last_error_at = excluded.last_error_at

-- name: dead_letter
-- Hub: park a row the sink rejected (or refresh the existing entry).
insert into sync.dead_letter as d (link, source_side, key, error)
values ($1, $2, $3::jsonb, $4)
on conflict (link, source_side, key) do update
   set error = excluded.error, last_seen = clock_timestamp(),
       attempts = d.attempts + 1, status = 'open', closed_at = null

-- name: close_dead_letters
-- Hub: dead letters whose key has since synced cleanly are closed.
update sync.dead_letter set status = 'closed', closed_at = clock_timestamp()
 where link = $1 and source_side = $2 and status <> 'closed' and key = any($3::jsonb[])

-- name: prune_apply_log
-- Hub: keep a day of per-batch counts.
delete from sync.apply_log where applied_at < clock_timestamp() - interval '1 day'
