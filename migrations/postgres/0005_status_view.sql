-- depends: 0001_sync_schema 0002_webhooks 0003_ct_cursor 0004_reconcile
-- sync.status: one row per link and direction, everything an operator asks
-- first. The bridge writes samples into sync.link_state; the view adds the
-- counts (applied in the last minute, dead letters, conflicts), the live
-- bridges (active and standby), backfill progress and the last check verdict.
create view sync.status as
select s.link,
       case s.source_side when 'a' then 'a_to_b' else 'b_to_a' end as direction,
       s.queued,
       case when s.queued > 0 then clock_timestamp() - s.oldest_queued_at end as lag,
       (select coalesce(sum(l.rows), 0) from sync.apply_log l
         where l.link = s.link and l.source_side = s.source_side
           and l.applied_at > clock_timestamp() - interval '1 minute') as applied_last_minute,
       s.last_applied_at,
       s.applied_total,
       s.retries,
       (select count(*) from sync.dead_letter d
         where d.link = s.link and d.source_side = s.source_side and d.status <> 'closed') as dead_letters,
       s.last_error,
       s.last_error_at,
       clock_timestamp() - s.sampled_at as sampled_ago,
       (select max(b.heartbeat) from sync.bridges b where b.role = 'active') as bridge_heartbeat,
       (select count(*) from sync.conflicts c
         where c.link = s.link and c.status <> 'resolved') as open_conflicts,
       (select count(*) from sync.conflicts c where c.link = s.link) as conflicts_total,
       (select case when r.status = 'finished' then 'done ' || r.signalled
                    else r.status || ' ' || r.signalled || '/' || coalesce(r.total::text, '?')
               end
          from sync.backfill_runs r
         where r.link = s.link and r.side = s.source_side
         order by r.started_at desc limit 1) as backfill,
       (select c.verdict || ' ' || to_char(c.checked_at, 'YYYY-MM-DD HH24:MI:SS')
          from sync.check_status c
         where c.kind = 'link' and c.name = s.link) as last_check,
       (select string_agg(b.role || ' ' || b.host || ':' || b.pid || ' '
                          || to_char(b.heartbeat, 'HH24:MI:SS'), ', ' order by b.role, b.host)
          from sync.bridges b
         where b.heartbeat > clock_timestamp() - interval '1 minute') as bridges
  from sync.link_state s
 order by s.link, s.source_side;
