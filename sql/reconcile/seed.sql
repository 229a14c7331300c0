-- `syncbridge seed` (engine/reconcile/seed.py): psycopg %(name)s parameters.
-- Entries with braced fields are templates rendered per link with psycopg.sql.
-- An entry's description line is part of its statement: it holds no $, % or braces.

-- name: open_run
-- Sink: the unfinished seed of a link, to resume it.
select id, source_side, bounds::text, signals, sink_signals, total, started_at
  from sync.seed_runs where link = %(link)s and status = 'copying'

-- name: create_run
-- Sink: a new seed, recorded before its first chunk (started: the sink's clock before its checks).
insert into sync.seed_runs
       (id, link, source_side, bounds, signals, sink_signals, total, started_at)
values (%(id)s, %(link)s, %(side)s, %(bounds)s::jsonb, %(signals)s, %(sink_signals)s, %(total)s,
        %(started)s)

-- name: done_chunks
-- Sink: the chunks of a seed already in the sink table, with their row counts.
select chunk, rows from sync.seed_chunks where run_id = %(id)s

-- name: chunk_done
-- Sink, in the chunk's own transaction: this chunk's rows are in.
insert into sync.seed_chunks (run_id, chunk, rows) values (%(id)s, %(chunk)s, %(rows)s)

-- name: finish_run
-- Sink: the seed handed over.
update sync.seed_runs set status = 'finished', finished_at = clock_timestamp() where id = %(id)s

-- name: bridge_writes
-- Sink: batches of the link a bridge applied to the table since the seed began (must be none).
select count(*) from sync.applied_batches
 where link = %(link)s and source_side = %(side)s and applied_at >= %(since)s
   and (upserts > 0 or deletes > 0 or truncated)

-- name: queued_signals
-- Source or sink: the ids of a link side's signals queued now (not webhook events or canaries).
select coalesce(array_agg(id order by id), array[]::bigint[]) from sync.queue
 where link = %(link)s and side = %(side)s and op not in ('W', 'C')

-- name: forget_signals
-- Source or sink, at the handover: drop exactly the signals the copy already reflects.
delete from sync.queue
 where link = %(link)s and side = %(side)s and batch_id is null and id = any(%(ids)s)

-- name: claimed
-- Source: signals of a link side in a batch in flight: claimed by batch id (a SQL Server sink), or held (deleted in a transaction still open, so locked).
select count(*) filter (where batch_id is not null)
       + count(*) - (select count(*) from (select 1 from sync.queue
                                             where link = %(link)s and side = %(side)s
                                               and op not in ('W', 'C')
                                               for update skip locked) unlocked)
  from sync.queue
 where link = %(link)s and side = %(side)s and op not in ('W', 'C')

-- name: unaware_bridges
-- Hub: live active bridges, and those whose last heartbeat (which reads the pauses) may
-- predate the pause (a beat that began before it commits a little later).
select count(*) filter (where heartbeat <= %(since)s + interval '200 milliseconds'),
       count(*)
  from sync.bridges
 where role = 'active' and heartbeat > clock_timestamp() - 2 * heartbeat_interval

-- name: bounds
-- Source, in the snapshot: every step-th key in key order (texts): the chunks' upper bounds.
select array[{key_text}]
  from (select {key_cols}, row_number() over (order by {key_cols}) as rn
          from {table} t) t
 where rn % {step} = 0
 order by {key_cols}

-- name: copy_out
-- Source, in the snapshot: one chunk's rows as COPY text, the link's columns in pair order.
copy (select {cols} from {table} t {where}) to stdout

-- name: copy_in
-- Sink: one chunk's rows into the link's columns (the others take their defaults).
copy {table} ({cols}) from stdin
