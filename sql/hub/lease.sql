-- Leadership of the bridge: the advisory lock, heartbeats in sync.bridges (engine/hub/lease.py).

-- name: heartbeat
-- Hub, once per heartbeat interval, the bridge's only statement while idle: this bridge
-- is alive (gone after two missed beats); the depth samples of its quiet directions
-- ($6: [{link, side}] woken by NOTIFY, nothing queued at their last sample, nothing
-- claimed since) stay fresh; returns the held links and the rate limits
-- (sync.link_holds: paused, or outside active_hours), and a row with no link when
-- the bridge has upkeep to do (so none of that is polled either).
with beat as (
    insert into sync.bridges (instance, host, pid, role, heartbeat_interval)
    values ($1, $2, $3, $4, make_interval(secs => $5))
    on conflict (instance) do update
       set role = excluded.role, heartbeat = clock_timestamp(),
           heartbeat_interval = excluded.heartbeat_interval
), quiet as (
    update sync.link_state s set sampled_at = clock_timestamp()
      from jsonb_to_recordset($6::jsonb) q(link text, side text)
     where s.link = q.link and s.source_side = q.side and s.queued = 0
), gone as (  -- rows of bridges gone for a minute
    delete from sync.bridges
     where heartbeat < clock_timestamp() - greatest(interval '1 minute', 2 * heartbeat_interval)
)
select link, held_reason, rate_limit from sync.link_holds
 where held_reason is not null or rate_limit is not null
union all  -- a row with no link: an operator asked for dead-letter retries, resolutions
select null, null, null  -- or a resync
 where exists (select 1 from sync.dead_letter where status = 'retry')
    or exists (select 1 from sync.conflicts where status = 'resolving')
    or exists (select 1 from sync.backfill_runs where status = 'requested')

-- name: forget_bridge
-- Hub: this bridge stops; it is gone at once, not after missed heartbeats.
delete from sync.bridges where instance = $1

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

-- name: try_lock
-- Hub: take the configuration's advisory lock if free (held by the session: a dead
-- bridge's lock is released with its connection).
select pg_try_advisory_lock(hashtext($1))

-- name: unlock
-- Hub: let go of one advisory lock this session holds (a standby that took only some).
select pg_advisory_unlock(hashtext($1))

-- name: alive
-- Any peer: the connection answers.
select 1

-- name: fence_stale
-- Hub: end the session of a lock holder that missed its heartbeats.
select pg_terminate_backend($1)

-- name: publish_link_options
-- Hub, at the start of a term, on the leader's own session (its TimeZone is the
-- server's, not the pinned UTC of the pools): each link's active_hours ($1:
-- [{link, hours}]) and the server zone the window is read in.
insert into sync.link_control as c (link, active_hours, active_zone)
select x.link, x.hours, (select reset_val from pg_settings where name = 'TimeZone')
  from jsonb_to_recordset($1::jsonb) as x(link text, hours text)
on conflict (link) do update
   set active_hours = excluded.active_hours, active_zone = excluded.active_zone
 where (c.active_hours, c.active_zone) is distinct from (excluded.active_hours,
                                                         excluded.active_zone)
