-- Operator queries of the CLI; they only read what sync.status computes.

-- name: status
-- Everything `syncbridge status` prints, one row per link and direction.
select link, direction, state, queued, lag, applied_last_minute, last_applied_at, open_conflicts,
       applied_total, retries, dead_letters, last_error, bridge_heartbeat, bridges, backfill, last_check
  from sync.status

-- name: status_all
-- Every column of sync.status, whatever the view has (`syncbridge status` picks what fits).
select * from sync.status order by 1, 2
