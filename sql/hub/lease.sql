-- Leadership of the bridge: the advisory lock, heartbeats in sync.bridges (engine/hub/lease.py).

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

-- name: try_lock
-- Hub: take the configuration's advisory lock if free (held by the session: a dead
-- bridge's lock is released with its connection).
select pg_try_advisory_lock(hashtext($1))

-- name: alive
-- Any peer: the connection answers.
select 1

-- name: fence_stale
-- Hub: end the session of a lock holder that missed its heartbeats.
select pg_terminate_backend($1)
