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

-- name: release_batch
-- Give a claimed batch back untouched (its link paused before anything was applied).
update sync.queue set batch_id = null where batch_id = $1

-- name: table_shape
-- The linked table's columns as the bridge validated them (schema-change check).
select sync.table_shape($1::regclass)::text

-- name: finish_batch
-- The sink committed the batch: drop exactly its claimed signals.
delete from sync.queue where batch_id = $1

-- name: defer_keys
-- Give signals of keys the sink could not take yet ($2: the batch's problems) back, later.
update sync.queue
   set batch_id = null, attempts = attempts + 1,
       retry_at = clock_timestamp() + make_interval(secs => least(60, $3 * power(2, attempts)))
 where batch_id = $1
   and key in (select e -> 'key' from jsonb_array_elements($2::jsonb) e
                where (e ->> 'defer')::boolean)

-- name: queue_depth
-- Queued signals of one link side and the age of the oldest (lag); canaries not counted.
select count(*) as queued, min(enqueued_at) as oldest
  from sync.queue where link = $1 and side = $2 and op not in ('W', 'C')

-- name: set_origin
-- Tag this transaction's writes so capture does not send them back.
select set_config('syncbridge.origin', $1, true)

-- name: batch_record
-- The sink's record of an applied batch (null when not applied).
select dead::text as dead, synced::text as synced, conflicts::text as conflicts, truncated
  from sync.applied_batches where batch_id = $1

-- name: record_batch
-- Written in the same sink transaction as the batch's rows.
insert into sync.applied_batches
       (batch_id, link, source_side, signals, upserts, deletes, dead, synced, conflicts, truncated)
values ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9::jsonb, $10)

-- name: prune_applied
-- Sink: drop applied-batch records older than $1 days ([bridge] applied_batches_days).
-- A batch still claimed at a source is at most minutes old, so its record is kept.
delete from sync.applied_batches
 where applied_at < clock_timestamp() - make_interval(secs => $1 * 86400)

-- name: prune_check_runs
-- Hub: check runs (and their diffs, by cascade) older than $1 days, except the last per name.
delete from sync.check_runs r
 where r.started_at < clock_timestamp() - make_interval(secs => $1 * 86400)
   and r.id <> (select max(x.id) from sync.check_runs x
                 where x.kind = r.kind and x.name = r.name)

-- name: prune_conflicts
-- Hub: resolved conflicts older than $1 days.
delete from sync.conflicts
 where status = 'resolved'
   and resolved_at < clock_timestamp() - make_interval(secs => $1 * 86400)

-- name: report_batch
-- Hub: count an applied batch for sync.status.
with log as (
    insert into sync.apply_log (link, source_side, rows) values ($1, $2, $3)
)
insert into sync.link_state as s (link, source_side, last_applied_at, applied_total,
                                batches_total)
values ($1, $2, clock_timestamp(), $3, 1)
on conflict (link, source_side) do update
   set last_applied_at = excluded.last_applied_at,
       applied_total = s.applied_total + excluded.applied_total,
       batches_total = s.batches_total + 1

-- name: report_depth
-- Hub: the latest queue depth sample of one link side ($5: its queue is in the hub,
-- so sync.status counts it itself), and the thresholds sync.status judges it by.
insert into sync.link_state as s (link, source_side, queued, oldest_queued_at, sampled_at,
                                source_local, stall_after, stale_after)
values ($1, $2, $3, $4, clock_timestamp(), $5, make_interval(secs => $6),
        make_interval(secs => $7))
on conflict (link, source_side) do update
   set queued = excluded.queued, oldest_queued_at = excluded.oldest_queued_at,
       sampled_at = excluded.sampled_at, source_local = excluded.source_local,
       stall_after = excluded.stall_after, stale_after = excluded.stale_after

-- name: report_error
-- Hub: a failed attempt (it will be retried) of one link side; $4: 'sink' or
-- 'source' when that database is unreachable, else null (sync.status: failing).
insert into sync.link_state as s (link, source_side, retries, last_error, last_error_at,
                                error_kind, failing_since)
values ($1, $2, 1, $3, clock_timestamp(), $4, clock_timestamp())
on conflict (link, source_side) do update
   set retries = s.retries + 1, last_error = excluded.last_error,
       last_error_at = excluded.last_error_at, error_kind = excluded.error_kind,
       failing_since = coalesce(s.failing_since, excluded.failing_since)

-- name: report_recovered
-- Hub: one link side works again; returns the failure streak it ends (none: no row).
update sync.link_state s
   set last_error = null, error_kind = null, failing_since = null
  from sync.link_state old
 where s.link = $1 and s.source_side = $2 and old.link = s.link
   and old.source_side = s.source_side and s.last_error is not null
returning old.failing_since, old.last_error

-- name: report_retries
-- Hub: $3 rows of a batch were deferred (retried later), counted in sync.status.retries.
insert into sync.link_state as s (link, source_side, retries)
values ($1, $2, $3)
on conflict (link, source_side) do update set retries = s.retries + excluded.retries

-- name: canary_send
-- Source: queue an end-to-end canary; it travels like any signal (op C).
insert into sync.queue (link, side, op, key)
values ($1, $2, 'C', jsonb_build_object('sent_at', clock_timestamp()))
returning (key ->> 'sent_at')::timestamptz as sent_at

-- name: canary_sent
-- Hub: a canary of one link side is on its way.
insert into sync.link_state as s (link, source_side, canary_sent_at)
values ($1, $2, $3)
on conflict (link, source_side) do update set canary_sent_at = excluded.canary_sent_at

-- name: canary_applied
-- Sink, in the batch's transaction: the newest canary of the batch ($3: their keys) arrived.
insert into sync.canary as c (link, source_side, sent_at, applied_at)
select $1, $2, max((k ->> 'sent_at')::timestamptz), clock_timestamp()
  from jsonb_array_elements($3::jsonb) k
on conflict (link, source_side) do update
   set sent_at = excluded.sent_at, applied_at = excluded.applied_at
returning sent_at, applied_at

-- name: report_canary
-- Hub: a canary arrived end to end (sync.status.canary_lag).
insert into sync.link_state as s (link, source_side, canary_seen_sent_at, canary_applied_at)
values ($1, $2, $3, $4)
on conflict (link, source_side) do update
   set canary_seen_sent_at = excluded.canary_seen_sent_at,
       canary_applied_at = excluded.canary_applied_at

-- name: heartbeat
-- Hub: this bridge is alive, with the interval it beats at (gone after two missed).
insert into sync.bridges (instance, host, pid, role, heartbeat_interval)
values ($1, $2, $3, $4, make_interval(secs => $5))
on conflict (instance) do update
   set role = excluded.role, heartbeat = clock_timestamp(),
       heartbeat_interval = excluded.heartbeat_interval

-- name: forget_bridge
-- Hub: this bridge stops; it is gone at once, not after missed heartbeats.
delete from sync.bridges where instance = $1

-- name: prune_bridges
-- Hub: rows of bridges gone for a minute.
delete from sync.bridges
 where heartbeat < clock_timestamp() - greatest(interval '1 minute', 2 * heartbeat_interval)

-- name: stale_leader
-- Hub: the backend holding the bridge's advisory lock ($1) when no active bridge has
-- beaten for two intervals (a stopped or hung process keeps its session and lock);
-- a backend younger than that may be a bridge that has not beaten yet.
select l.pid from pg_locks l join pg_stat_activity a on a.pid = l.pid
 where l.locktype = 'advisory' and l.granted and l.objsubid = 1
   and l.database = (select oid from pg_database where datname = current_database())
   and ((l.classid::bigint << 32) | l.objid::bigint) = hashtext($1)::bigint
   and a.backend_start < clock_timestamp() - make_interval(secs => 2 * $2)
   and not exists (select 1 from sync.bridges b
                    where b.role = 'active'
                      and b.heartbeat > clock_timestamp() - 2 * b.heartbeat_interval)

-- name: paused_links
-- Hub: links an operator (sync.pause) or schema-change detection paused.
select link, paused_reason from sync.link_control where paused_reason is not null

-- name: dead_letter
-- Hub: park the rows the sink rejected ($3: the batch's problems), or refresh their entries.
insert into sync.dead_letter as d (link, source_side, key, error)
select $1, $2, e -> 'key', e ->> 'error' from jsonb_array_elements($3::jsonb) e
 where not (e ->> 'defer')::boolean
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

-- name: state_write
-- Two-way links: remember each row's image as last synced (null = absent): a known base.
insert into sync.row_state (link, key, image, known, synced_at)
select $1, x.key, nullif(x.image, 'null'::jsonb), true, clock_timestamp()
  from jsonb_to_recordset($2::jsonb) as x(key jsonb, image jsonb)
on conflict (link, key) do update
   set image = excluded.image, known = true, synced_at = excluded.synced_at

-- name: seed_state
-- install/adopt: base images (key, image, known); never over a base the bridge wrote
-- since the seeding started, and an unknown entry never replaces an existing one.
insert into sync.row_state as rs (link, key, image, known, synced_at)
select $1, x.key, nullif(x.image, 'null'::jsonb), x.known, clock_timestamp()
  from jsonb_to_recordset($2::jsonb) as x(key jsonb, image jsonb, known boolean)
on conflict (link, key) do update
   set image = excluded.image, known = true, synced_at = excluded.synced_at
 where excluded.known and rs.synced_at < $3

-- name: resignal
-- Conflict won by the sink's row: send it back the other way, unchecked (op R).
insert into sync.queue (link, side, op, key)
select $1, $2, 'R', x from jsonb_array_elements($3::jsonb) as x

-- name: record_conflict
-- Hub: the conflicts ($4) found by batch $3; replays of the same batch add nothing.
insert into sync.conflicts as c
       (link, key, a_image, b_image, last_image, policy, winner, status,
        resolved_at, resolved_by, batch_id, columns)
select $1, e -> 'key', nullif(e -> 'a', 'null'), nullif(e -> 'b', 'null'),
       nullif(e -> 'last', 'null'), coalesce(e ->> 'policy', $2), e ->> 'winner',
       case when e ->> 'winner' is null then 'open' else 'resolved' end,
       case when e ->> 'winner' is not null then clock_timestamp() end,
       case when e ->> 'winner' is not null then 'policy:' || coalesce(e ->> 'policy', $2)
       end, $3,
       array(select jsonb_array_elements_text(coalesce(e -> 'columns', '[]')))
  from jsonb_array_elements($4::jsonb) e
 where not exists (select 1 from sync.conflicts x where x.batch_id = $3 and x.key = e -> 'key')
on conflict (link, key) where status <> 'resolved' do update
   set a_image = excluded.a_image, b_image = excluded.b_image,
       batch_id = excluded.batch_id, detected_at = clock_timestamp()

-- name: resolving_conflicts
-- Hub: conflicts an operator settled with sync.resolve_conflict(), to enact.
select id, link, key::text as key, winner, a_image::text as a, b_image::text as b,
       last_image::text as last
  from sync.conflicts where status = 'resolving'

-- name: conflict_resolved
-- Hub: the winner's row has been signalled.
update sync.conflicts set status = 'resolved', resolved_at = clock_timestamp()
 where id = $1 and status = 'resolving'

-- name: forget_state
-- Two-way links: a truncated table has no last-synced rows any more.
delete from sync.row_state where link = $1

-- name: pause_link
-- Hub: hold a link back with a reason (its signals keep queueing); sync.pause notifies.
select sync.pause($1, $2)

-- name: resume_link
-- Hub: let a paused link flow again (sync.resume wakes the bridge).
select sync.resume($1)

-- name: link_paused
-- Hub: why a link is paused (null: it is not).
select paused_reason from sync.link_control where link = $1
