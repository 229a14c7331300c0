-- Back to the 0005 view and schema; canary signals still queued are dropped.
drop view sync.status;
drop function sync.resume(text);
drop function sync.pause(text, text);
drop table sync.link_control;
delete from sync.check_runs where verdict = 'in flight';
alter table sync.check_runs drop constraint check_runs_verdict_check;
alter table sync.check_runs add constraint check_runs_verdict_check
    check (verdict in ('equal', 'different', 'ok', 'violated', 'error'));
alter table sync.bridges drop column heartbeat_interval;
alter table sync.link_state
    drop column source_local, drop column batches_total, drop column error_kind,
    drop column failing_since, drop column canary_sent_at, drop column canary_seen_sent_at,
    drop column canary_applied_at, drop column stall_after, drop column stale_after;
drop table sync.canary;
delete from sync.queue where op = 'C';
alter table sync.queue drop constraint queue_op_check;
alter table sync.queue add constraint queue_op_check check (op in ('K', 'T', 'R', 'W'));

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
