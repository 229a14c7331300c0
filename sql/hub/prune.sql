-- Retention of the hub's logs ([bridge] *_days; engine/hub/prune.py).

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

-- name: prune_apply_log
-- Hub: keep a day of per-batch counts.
delete from sync.apply_log where applied_at < clock_timestamp() - interval '1 day'
