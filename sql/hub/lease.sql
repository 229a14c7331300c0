-- Leadership of the bridge: the advisory locks (its link set's, one per link), heartbeats in
-- sync.bridges (engine/hub/lease.py).

-- name: heartbeat
-- Hub, once per heartbeat interval, the bridge's only statement while idle (lease.Beat).
-- ($6: [{link, side}] quiet directions woken by NOTIFY, nothing queued at their last
-- sample, nothing claimed since, whose sample stays fresh; $7: its link set
-- (lease.lock_key); $8: the links it holds; $9: the lock names it wants and does not
-- hold.) Rows by kind: 'hold' (sync.link_holds: paused, outside active_hours, rate
-- limits), 'upkeep' (dead-letter retries, resolutions or a resync wait: none of that
-- is polled), 'free' (a wanted lock nobody holds), 'stale' (the hub backend holding a
-- wanted lock for a bridge that missed two beats: a stopped or hung process keeps its
-- session; a backend younger than that may be a bridge that has not beaten yet),
-- 'live' (n: bridges of this link set whose lock session is alive, this one included),
-- 'least' (n: the fewest links one of the others holds; no row without others).
with beat as (
    insert into sync.bridges (instance, host, pid, role, heartbeat_interval, backend_pid,
                              link_set, links)
    values ($1, $2, $3, $4, make_interval(secs => $5), pg_backend_pid(), $7, $8)
    on conflict (instance) do update
       set role = excluded.role, heartbeat = clock_timestamp(),
           heartbeat_interval = excluded.heartbeat_interval,
           backend_pid = excluded.backend_pid, link_set = excluded.link_set,
           links = excluded.links
), quiet as (
    update sync.link_state s set sampled_at = clock_timestamp()
      from jsonb_to_recordset($6::jsonb) q(link text, side text)
     where s.link = q.link and s.source_side = q.side and s.queued = 0
), gone as (  -- rows of bridges gone for a minute
    delete from sync.bridges
     where heartbeat < clock_timestamp() - greatest(interval '1 minute', 2 * heartbeat_interval)
), locks as (  -- the advisory locks granted in this database, and their backends
    select (l.classid::bigint << 32) | l.objid::bigint as key, l.pid, a.backend_start
      from pg_locks l join pg_stat_activity a on a.pid = l.pid
     where l.locktype = 'advisory' and l.granted and l.objsubid = 1
       and l.database = (select oid from pg_database where datname = current_database())
), wanted as (
    select w.name, hashtext(w.name)::bigint as key from unnest($9::text[]) w(name)
), peers as (  -- the other live bridges of this link set
    select b.links from sync.bridges b
     where b.link_set = $7 and b.instance <> $1
       and b.heartbeat > clock_timestamp() - 2 * b.heartbeat_interval
       and exists (select 1 from pg_stat_activity a where a.pid = b.backend_pid)
)
select 'hold' as kind, link, held_reason, rate_limit, null::bigint as n from sync.link_holds
 where held_reason is not null or rate_limit is not null
union all
select 'upkeep', null, null, null, null
 where exists (select 1 from sync.dead_letter where status = 'retry')
    or exists (select 1 from sync.conflicts where status = 'resolving')
    or exists (select 1 from sync.backfill_runs where status = 'requested')
union all
select 'free', w.name, null, null, null from wanted w
 where not exists (select 1 from locks l where l.key = w.key)
union all
select distinct 'stale', null::text, null::text, null::float8, l.pid::bigint
  from wanted w join locks l on l.key = w.key
 where l.pid <> pg_backend_pid()
   and l.backend_start < clock_timestamp() - make_interval(secs => 2 * $5)
   and not exists (select 1 from sync.bridges b where b.backend_pid = l.pid
                      and b.heartbeat > clock_timestamp() - 2 * b.heartbeat_interval)
union all
select 'live', null, null, null, 1 + count(*) from peers
union all
select 'least', null, null, null, min(coalesce(cardinality(links), 0)) from peers
having count(*) > 0

-- name: forget_bridge
-- Hub: this bridge stops; it is gone at once, not after missed heartbeats.
delete from sync.bridges where instance = $1

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
