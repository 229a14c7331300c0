-- The queue of one Postgres source side and the batch record of a Postgres sink.
-- A Postgres sink takes a batch by deleting its signals in a source transaction
-- held open until the sink committed (take ... commit, engine/postgres/drain.py);
-- a SQL Server sink marks them with a batch id instead (claim ... finish_batch,
-- engine/sqlserver/pg_to_ct.py).

-- name: take
-- Template: take the oldest visible signals of one link side with ids above the fifth parameter (0: all): deleted in a transaction the drain commits after the sink did. The first row carries the table's shape and the statement snapshot's xmin and xmax (the drain's floor, held.py Floor), and for a small batch the rows field: the current rows of its keys (sql.py take_rows).
with taken as (
    delete from sync.queue
     where ctid = any(array(
               select ctid from sync.queue
                where link = $1 and side = $2 and batch_id is null and op <> 'W'
                  and id > $5
                  and (retry_at is null or retry_at <= clock_timestamp())
                order by id
                limit $3
                  for update skip locked))
    returning id, op, key, attempts
)
select id, op, key::text as key, attempts,
       case when row_number() over () = 1 then sync.table_shape($4::regclass)::text end as shape,
       case when row_number() over () = 1
            then pg_snapshot_xmin(pg_current_snapshot())::text::int8 end as xmin,
       case when row_number() over () = 1
            then pg_snapshot_xmax(pg_current_snapshot())::text::int8 end as xmax
       {rows}
  from taken

-- name: hold
-- Open the source transaction of a held batch. Its commit need not wait for a flush: if a crash loses it, the signals come back and recovery replays the batch from the sink's durable record.
begin; set local synchronous_commit = off

-- name: take_ids
-- Take exactly the signals of an applied batch that are still queued (recovery: the third parameter holds its ids).
delete from sync.queue
 where link = $1 and side = $2 and batch_id is null and op <> 'W' and id <@ $3::text::int8multirange
returning id, op, key::text as key, attempts

-- name: queue_floor
-- The oldest signal still queued for one link side, locked or not (recovery).
select min(id) from sync.queue where link = $1 and side = $2 and batch_id is null and op <> 'W'

-- name: still_queued
-- Recovery: which of the sink's candidate records (the third parameter: their queue ids, by position) still have signals queued.
select r.i::int from unnest($3::text[]) with ordinality as r(ids, i)
 where exists (select 1 from sync.queue q
                where q.link = $1 and q.side = $2 and q.batch_id is null and q.op <> 'W'
                  and q.id <@ r.ids::int8multirange)
 order by r.i

-- name: held_records
-- Sink: records of batches whose signals may still be queued at the source (ids from the third parameter up).
select batch_id, queue_ids::text as queue_ids, dead::text as dead, synced::text as synced,
       conflicts::text as conflicts, truncated
  from sync.applied_batches
 where link = $1 and source_side = $2 and upper(queue_ids) > $3
   and queue_ids && int8multirange(int8range($3, null))
 order by applied_at

-- name: requeue
-- Deferred keys queued again, to be retried later: one signal per key (R if any was), attempts counted.
insert into sync.queue (link, side, op, key, attempts, retry_at)
select $1, $2, max(s.op), s.key, max(s.attempts) + 1,
       clock_timestamp() + make_interval(secs => least(60, $5 * power(2, max(s.attempts))))
  from jsonb_to_recordset($3::jsonb) as s(op text, key jsonb, attempts int)
 where s.key in (select e -> 'key' from jsonb_array_elements($4::jsonb) e
                  where (e ->> 'defer')::boolean)
 group by s.key

-- name: legacy_batch_signals
-- Signals a bridge before version 0.11 marked as a batch and did not finish: taken now.
delete from sync.queue where batch_id = $1
returning id, op, key::text as key, attempts

-- name: claim
-- Claim the oldest visible, unclaimed key signals of one link side as a new batch.
with c as (
    select id from sync.queue
     where link = $1 and side = $2 and batch_id is null and op <> 'W'
       and (retry_at is null or retry_at <= clock_timestamp())
     order by id
     limit $3
       for update skip locked
)
update sync.queue q set batch_id = $4 from c where q.id = c.id
returning q.id, q.op, q.key::text as key, q.attempts

-- name: pending_batches
-- Batches claimed by an earlier run that were never finished (crash recovery).
select distinct batch_id from sync.queue
 where link = $1 and side = $2 and batch_id is not null and op <> 'W'

-- name: batch_signals
-- The signals of one claimed batch, to re-apply it after a crash.
select id, op, key::text as key, attempts from sync.queue where batch_id = $1 order by id

-- name: release_batch
-- Give a claimed batch back untouched (its link paused before anything was applied).
update sync.queue set batch_id = null where batch_id = $1

-- name: finish_batch
-- The sink committed the batch: drop exactly its claimed signals.
delete from sync.queue where batch_id = $1

-- name: queue_depth
-- Queued signals of one link side and the age of the oldest (lag); canaries not counted.
select count(*) as queued, min(enqueued_at) as oldest
  from sync.queue where link = $1 and side = $2 and op not in ('W', 'C')

-- name: set_origin
-- Tag this transaction's writes so capture does not send them back.
select set_config('syncbridge.origin', $1, true)

-- name: sink_begin
-- A sink transaction's first statement: tag its writes (as set_origin), read the sink table's shape, and commit without waiting for its flush when the third parameter says so (the drain then waits for it with sink_flush before the batch's source commit; else the session's own setting).
select set_config('syncbridge.origin', $1, true), sync.table_shape($2::regclass)::text,
       set_config('synchronous_commit',
                  case when $3 then 'off' else current_setting('synchronous_commit') end, true)

-- name: sink_flush
-- Sink: returns once the WAL of every commit before it is flushed, as the session's synchronous_commit says (a batch the sink committed without waiting for its flush: its source commit waits for this). A transactional logical decoding message gives the statement a transaction id and a WAL record, so its commit flushes; any role may emit one (decoders of the sink see an empty message, prefix syncbridge).
select pg_logical_emit_message(true, 'syncbridge', '')

-- name: sink_flushed
-- Sink, when sink_flush may not run (its function's EXECUTE revoked): whether the WAL is flushed up to the first parameter (pg_current_wal_insert_lsn read after the commits to wait for).
select pg_current_wal_flush_lsn() >= $1::text::pg_lsn

-- name: sink_insert_lsn
-- Sink: the WAL position after every commit before it (sink_flushed waits for it).
select pg_current_wal_insert_lsn()::text

-- name: batch_record
-- The sink's record of an applied batch (null when not applied).
select dead::text as dead, synced::text as synced, conflicts::text as conflicts, truncated
  from sync.applied_batches where batch_id = $1

-- name: record_batch
-- Written in the same sink transaction as the batch's rows (the last parameter: the signals' queue ids, null from SQL Server).
-- Not written (and the batch is given back) when an applied batch already names one of its signals:
-- those came back at the source without their batch's recovery (a lost source commit), so they are
-- recovered first, never applied twice. Only a record whose highest id is above the batch's
-- lowest can overlap it (the index applied_batches_upper_id).
insert into sync.applied_batches
       (batch_id, link, source_side, signals, upserts, deletes, dead, synced, conflicts, truncated,
        queue_ids)
select $1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9::jsonb, $10, $11::text::int8multirange
 where not exists (select 1 from sync.applied_batches
                    where link = $2 and source_side = $3
                      and upper(queue_ids) > lower($11::text::int8multirange)
                      and queue_ids && $11::text::int8multirange)

-- name: apply_batch
-- A small one-way batch in one statement, its own transaction: shape check, origin tag, delete, upsert and record (sync.apply_batch, migration 0014); committed without waiting for its flush when the last parameter says so (as sink_begin).
select shape_ok, deleted, upserted
  from sync.apply_batch($1, $2::regclass, $3::jsonb, $4, $5::jsonb, $6, $7::jsonb, $8, $9, $10,
                        $11, $12),
       set_config('synchronous_commit',
                  case when $13 then 'off' else current_setting('synchronous_commit') end, true)

-- name: state_write
-- Two-way links: remember each row's image as last synced (null = absent): a known base.
insert into sync.row_state (link, key, image, known, synced_at)
select $1, x.key, nullif(x.image, 'null'::jsonb), true, clock_timestamp()
  from jsonb_to_recordset($2::jsonb) as x(key jsonb, image jsonb)
on conflict (link, key) do update
   set image = excluded.image, known = true, synced_at = excluded.synced_at

-- name: seed_state
-- install/adopt: base images (key, image, known); never over a base the bridge wrote
-- since the seeding started, and an unknown entry never replaces an existing one.
insert into sync.row_state as rs (link, key, image, known, synced_at)
select $1, x.key, nullif(x.image, 'null'::jsonb), x.known, clock_timestamp()
  from jsonb_to_recordset($2::jsonb) as x(key jsonb, image jsonb, known boolean)
on conflict (link, key) do update
   set image = excluded.image, known = true, synced_at = excluded.synced_at
 where excluded.known and rs.synced_at < $3

-- name: resignal
-- Conflict won by the sink's row: send it back the other way, unchecked (op R).
insert into sync.queue (link, side, op, key)
select $1, $2, 'R', x from jsonb_array_elements($3::jsonb) as x

-- name: forget_state
-- Two-way links: a truncated table has no last-synced rows any more.
delete from sync.row_state where link = $1

-- name: canary_send
-- Source: queue an end-to-end canary; it travels like any signal (op C).
insert into sync.queue (link, side, op, key)
values ($1, $2, 'C', jsonb_build_object('sent_at', clock_timestamp()))
returning (key ->> 'sent_at')::timestamptz as sent_at

-- name: canary_applied
-- Sink, in the batch's transaction: the newest canary of the batch ($3: their keys) arrived.
insert into sync.canary as c (link, source_side, sent_at, applied_at)
select $1, $2, max((k ->> 'sent_at')::timestamptz), clock_timestamp()
  from jsonb_array_elements($3::jsonb) k
on conflict (link, source_side) do update
   set sent_at = excluded.sent_at, applied_at = excluded.applied_at
returning sent_at, applied_at

-- name: prune_applied
-- Sink: drop applied-batch records older than $1 days ([bridge] applied_batches_days).
-- A batch still claimed at a source is at most minutes old, so its record is kept.
delete from sync.applied_batches
 where applied_at < clock_timestamp() - make_interval(secs => $1 * 86400)

-- name: sink_truncatable
-- Sink, in the batch's transaction: may TRUNCATE empty this table instead of DELETE? Not when a
-- foreign key references it or a table inheriting it (TRUNCATE would fail, or with CASCADE empty
-- the referencing tables), a row-level DELETE trigger of the user's is on it (TRUNCATE fires
-- none), or the bridge's role lacks the TRUNCATE privilege.
with recursive tree (oid) as (
    select $1::regclass::oid
    union
    select i.inhrelid from pg_inherits i join tree t on i.inhparent = t.oid
)
select not exists (select 1 from pg_constraint c
                    where c.contype = 'f' and c.confrelid in (select oid from tree))
   and not exists (select 1 from pg_trigger g
                    where g.tgrelid in (select oid from tree) and not g.tgisinternal
                      and g.tgtype::int & 1 = 1 and g.tgtype::int & 8 = 8)
   and has_table_privilege($1::regclass, 'TRUNCATE')
