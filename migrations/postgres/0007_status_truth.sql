-- depends: 0005_status_view
-- sync.status that tells the truth (issue 13): queue depth and lag read from
-- the queue itself where it lives in this database, a `state` per link and
-- direction, bridges shown gone after two missed heartbeats, an end-to-end
-- canary, and the pause contract (sync.link_control, sync.pause, sync.resume).

-- Canary signals (op C) travel the real pipeline: queued at the source,
-- claimed, recorded on the sink (sync.canary) in the batch's transaction.
alter table sync.queue drop constraint queue_op_check;
alter table sync.queue add constraint queue_op_check check (op in ('K', 'T', 'R', 'W', 'C'));

-- Sink: the last canary of each link side applied here.
create table sync.canary (
    link        text not null,
    source_side char(1) not null,
    sent_at     timestamptz not null,   -- source clock, when the canary was queued
    applied_at  timestamptz not null default clock_timestamp(),  -- sink clock
    primary key (link, source_side)
);

-- Hub: facts the bridge reports beside the samples.
alter table sync.link_state
    add column source_local boolean not null default false,  -- source queue is in this db
    add column batches_total bigint not null default 0,
    add column error_kind text,               -- 'sink' / 'source' unreachable, else null
    add column failing_since timestamptz,     -- first failure of the current streak
    add column canary_sent_at timestamptz,    -- last canary queued (source clock)
    add column canary_seen_sent_at timestamptz,  -- sent_at of the last canary applied
    add column canary_applied_at timestamptz, -- when it was applied (sink clock)
    add column stall_after interval not null default interval '30 seconds',
    add column stale_after interval not null default interval '10 seconds';

-- Hub: a bridge is alive while its heartbeat is younger than two intervals.
alter table sync.bridges
    add column heartbeat_interval interval not null default interval '2 seconds';

-- Hub: the pause contract. A link with a non-null paused_reason is not
-- drained (its signals keep queueing); sync.status shows `paused: <reason>`.
create table sync.link_control (
    link          text primary key,
    paused_reason text,
    paused_at     timestamptz,
    paused_by     text
);

-- Function: sync.pause(link, reason) / sync.resume(link)
-- Parameters: the link's name; why it is paused (shown in sync.status).
-- Tables directly manipulated: sync.link_control.
-- The bridge LISTENs on `syncbridge_control` and re-reads sync.link_control
-- at least every second, so either takes effect within about a second.
create function sync.pause(p_link text, p_reason text)
returns void
language plpgsql
as $$
begin
    if coalesce(p_reason, '') = '' then
        raise exception 'sync.pause needs a reason';
    end if;
    insert into sync.link_control as c (link, paused_reason, paused_at, paused_by)
    values (p_link, p_reason, clock_timestamp(), current_user)
    on conflict (link) do update
       set paused_reason = excluded.paused_reason, paused_at = excluded.paused_at,
           paused_by = excluded.paused_by;
    perform pg_notify('syncbridge_control', p_link);
end
$$;

create function sync.resume(p_link text)
returns void
language plpgsql
as $$
begin
    update sync.link_control
       set paused_reason = null, paused_at = null, paused_by = null
     where link = p_link;
    perform pg_notify('syncbridge_control', p_link);
end
$$;

alter table sync.check_runs drop constraint check_runs_verdict_check;
alter table sync.check_runs add constraint check_runs_verdict_check
    check (verdict in ('equal', 'different', 'in flight', 'ok', 'violated', 'error'));

-- sync.status: one row per link and direction known to the hub (drained
-- before, or with signals in this database's queue).
--   queued, lag     counted in sync.queue when the source queue is in this
--                   database (always true at the moment of reading); else the
--                   bridge's last sample, `stale` once older than stale_after
--   state           paused: <why> | no bridge | waiting for sink |
--                   waiting for source | failing: <error> | stalled |
--                   flowing | idle   (first that applies, in this order)
--   canary_lag      end-to-end time of the last canary (sent -> applied)
drop view sync.status;
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
           c.paused_reason,
           exists (select 1 from live where live.role = 'active') as bridge_alive
      from sides k
      left join sync.link_state s on s.link = k.link and s.source_side = k.source_side
      left join sync.link_control c on c.link = k.link
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
          from live b) as bridges
  from facts f
 order by f.link, f.source_side;
