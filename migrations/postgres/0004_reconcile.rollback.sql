-- sync.status back to its 0001 shape (a view cannot lose columns in place).
drop view sync.status;
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
       (select count(*) from sync.conflicts c where c.link = s.link) as conflicts_total
  from sync.link_state s
 order by s.link, s.source_side;
drop function sync.resync(text, char);
drop view sync.check_status;
drop table sync.check_diffs;
drop table sync.check_runs;
drop table sync.backfill_runs;
