-- Back to the 0009 view; the lease columns of sync.bridges are dropped.
drop view sync.status;
alter table sync.bridges drop column backend_pid, drop column link_set, drop column links;

create view sync.status as
with sides as (
    select link, source_side from sync.link_state
    union
    select distinct link, side from sync.queue where op not in ('W', 'C')
), live as (
    select * from sync.bridges b
     where b.heartbeat > clock_timestamp() - 2 * b.heartbeat_interval
), base as (
    select k.link, k.source_side, s.queued, s.oldest_queued_at, s.last_applied_at,
           s.applied_total, s.batches_total, s.retries, s.last_error, s.last_error_at,
           s.error_kind, s.failing_since, s.sampled_at, s.canary_sent_at,
           s.canary_seen_sent_at, s.canary_applied_at, s.stall_after, s.stale_after,
           coalesce(s.source_local, s.link is null) as local,
           q.queued as q_queued, q.oldest as q_oldest,
           c.held_reason as paused_reason, c.rate_limit,
           exists (select 1 from live where live.role = 'active') as bridge_alive
      from sides k
      left join sync.link_state s on s.link = k.link and s.source_side = k.source_side
      left join sync.link_holds c on c.link = k.link
      left join lateral (
          select count(*) filter (where op <> 'C') as queued,
                 min(enqueued_at) filter (where op <> 'C') as oldest
            from sync.queue
           where link = k.link and side = k.source_side and op <> 'W'
      ) q on coalesce(s.source_local, s.link is null)
), facts as (
    select b.*,
           case when b.local then b.q_queued else coalesce(b.queued, 0) end as n_queued,
           case when b.local then b.q_oldest else b.oldest_queued_at end as n_oldest,
           not b.local and clock_timestamp() - b.sampled_at > b.stale_after as n_stale,
           b.canary_sent_at > coalesce(b.canary_seen_sent_at, '-infinity') as canary_pending,
           coalesce(b.stall_after, interval '30 seconds') as n_stall_after
      from base b
)
select f.link,
       case f.source_side when 'a' then 'a_to_b' else 'b_to_a' end as direction,
       case
           when f.paused_reason is not null then 'paused: ' || f.paused_reason
           when not f.bridge_alive then 'no bridge'
           when f.last_error is not null and f.error_kind = 'sink' then 'waiting for sink'
           when f.last_error is not null and f.error_kind = 'source' then 'waiting for source'
           when f.last_error is not null then 'failing: ' || f.last_error
           when (f.canary_pending
                 and clock_timestamp() - f.canary_sent_at > f.n_stall_after)
             or (f.n_queued > 0
                 and clock_timestamp() - f.n_oldest > f.n_stall_after
                 and coalesce(f.last_applied_at, '-infinity')
                     < clock_timestamp() - f.n_stall_after) then 'stalled'
           when f.n_queued > 0 then 'flowing'
           else 'idle'
       end as state,
       f.n_queued as queued,
       case when f.n_queued > 0 then clock_timestamp() - f.n_oldest end as lag,
       coalesce(f.n_stale, false) as stale,
       (select coalesce(sum(l.rows), 0) from sync.apply_log l
         where l.link = f.link and l.source_side = f.source_side
           and l.applied_at > clock_timestamp() - interval '1 minute') as applied_last_minute,
       f.last_applied_at,
       coalesce(f.applied_total, 0) as applied_total,
       coalesce(f.batches_total, 0) as batches_total,
       coalesce(f.retries, 0) as retries,
       (select count(*) from sync.dead_letter d
         where d.link = f.link and d.source_side = f.source_side
           and d.status <> 'closed') as dead_letters,
       f.last_error,
       f.last_error_at,
       f.failing_since,
       f.canary_applied_at - f.canary_seen_sent_at as canary_lag,
       f.canary_applied_at,
       case when f.local then null else clock_timestamp() - f.sampled_at end as sampled_ago,
       (select max(b.heartbeat) from sync.bridges b where b.role = 'active') as bridge_heartbeat,
       (select count(*) from sync.conflicts c
         where c.link = f.link and c.status <> 'resolved') as open_conflicts,
       (select count(*) from sync.conflicts c where c.link = f.link) as conflicts_total,
       (select case when r.status = 'finished' then 'done ' || r.signalled
                    else r.status || ' ' || r.signalled || '/' || coalesce(r.total::text, '?')
               end
          from sync.backfill_runs r
         where r.link = f.link and r.side = f.source_side
         order by r.started_at desc limit 1) as backfill,
       (select c.verdict || ' ' || to_char(c.checked_at, 'YYYY-MM-DD HH24:MI:SS')
          from sync.check_status c
         where c.kind = 'link' and c.name = f.link) as last_check,
       (select string_agg(b.role || ' ' || b.host || ':' || b.pid || ' '
                          || to_char(b.heartbeat, 'HH24:MI:SS'), ', ' order by b.role, b.host)
          from live b) as bridges,
       f.rate_limit
  from facts f
 order by f.link, f.source_side;
