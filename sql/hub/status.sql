-- What the bridge reports into the hub for sync.status, and link control (engine/hub/report.py).

-- name: report_batch
-- Hub: count applied batches (the fourth parameter: how many) for sync.status.
with log as (
    insert into sync.apply_log (link, source_side, rows) values ($1, $2, $3)
)
insert into sync.link_state as s (link, source_side, last_applied_at, applied_total,
                                batches_total)
values ($1, $2, clock_timestamp(), $3, $4)
on conflict (link, source_side) do update
   set last_applied_at = excluded.last_applied_at,
       applied_total = s.applied_total + excluded.applied_total,
       batches_total = s.batches_total + excluded.batches_total

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

-- name: canary_sent
-- Hub: a canary of one link side is on its way.
insert into sync.link_state as s (link, source_side, canary_sent_at)
values ($1, $2, $3)
on conflict (link, source_side) do update set canary_sent_at = excluded.canary_sent_at

-- name: report_canary
-- Hub: a canary arrived end to end (sync.status.canary_lag).
insert into sync.link_state as s (link, source_side, canary_seen_sent_at, canary_applied_at)
values ($1, $2, $3, $4)
on conflict (link, source_side) do update
   set canary_seen_sent_at = excluded.canary_seen_sent_at,
       canary_applied_at = excluded.canary_applied_at

-- name: link_controls
-- Hub: held links (sync.pause, schema-change detection, outside active_hours) and rate
-- limits, as the heartbeat returns them.
select link, held_reason, rate_limit from sync.link_holds
 where held_reason is not null or rate_limit is not null

-- name: pause_link
-- Hub: hold a link back with a reason (its signals keep queueing); sync.pause notifies.
select sync.pause($1, $2)

-- name: set_rate
-- Hub: hold a link to this many rows per second (null or 0: unlimited); notifies.
select sync.set_rate($1, $2)

-- name: link_control
-- Hub: a link's control row as sync.link_holds has it (no row: never controlled).
select held_reason, rate_limit from sync.link_holds where link = $1

-- name: resume_link
-- Hub: let a paused link flow again (sync.resume wakes the bridge).
select sync.resume($1)

-- name: link_paused
-- Hub: why a link is paused (null: it is not).
select paused_reason from sync.link_control where link = $1

-- name: pending_canaries
-- Hub: link sides whose last canary has not arrived yet (no second one is sent).
select link, source_side from sync.link_state
 where canary_sent_at > coalesce(canary_seen_sent_at, '-infinity')

-- name: status_rows
-- Hub: sync.status as the metrics endpoint exports it.
select * from sync.status
