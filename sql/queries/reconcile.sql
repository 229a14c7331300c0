-- Reconciliation: backfill, check, repair (asyncpg $n parameters unless noted).
-- Entries with {braces} are templates rendered per link side with psycopg.sql
-- (identifiers quoted, canonical expressions from engine/reconcile/canonical.py).

-- name: chunk_checksum
-- Row count and the sum of 64 bits of md5(canonical row text) over one key range.
select count(*) as n,
       coalesce(sum({hash64}), 0)::text as h
  from {table} t
 {where}

-- name: boundaries
-- Every step-th key of a range in key order (each key column as text): chunk upper bounds.
select {key_text}
  from (select {key_cols}, row_number() over (order by {key_cols}) as rn
          from {table} t
         {where}) t
 where rn % {step} = 0
 order by {key_cols}

-- name: leaf_rows
-- Canonical key, key object and row hash of every row in a range (bottom of a bisection).
select {ckey} as ck, {key_obj}::text as k, md5({row}) as h
  from {table} t
 {where}

-- name: rows_by_keys
-- Canonical key, key object and per-column canonical text of the rows with these keys.
select {ckey} as ck, {key_obj}::text as k, array[{fields}] as f
  from jsonb_to_recordset($1::jsonb) as k({key_defs})
  join {table} t on {key_join}

-- name: queued_keys
-- Which of these keys of one link side still have a signal queued or claimed
-- (a queued TRUNCATE counts as every key).
select q.key::text as key from sync.queue q
 where q.link = $1 and q.side = $2 and q.op <> 'W' and q.key = any($3::jsonb[])
union all
select null where exists (select 1 from sync.queue q
                           where q.link = $1 and q.side = $2 and q.op = 'T')

-- name: start_check
-- Hub: open a check run of a link or a rule.
insert into sync.check_runs (kind, name) values ($1, $2) returning id

-- name: finish_check
-- Hub: the verdict and counts of a check run.
update sync.check_runs
   set verdict = $2, rows_a = $3, rows_b = $4, missing_a = $5, missing_b = $6,
       different = $7, violations = $8, in_flight = $9, error = $10, seconds = $11,
       finished_at = clock_timestamp()
 where id = $1

-- name: add_diffs
-- Hub: the differing keys (or violating rows) of a check run.
insert into sync.check_diffs (run_id, kind, key_a, key_b, columns, detail)
select $1, d.kind, d.key_a, d.key_b, d.columns, d.detail
  from jsonb_to_recordset($2::jsonb)
       as d(kind text, key_a jsonb, key_b jsonb, columns text[], detail jsonb)

-- name: rule_rows
-- A [[rules]] query's violating rows, each as one jsonb text.
select to_jsonb(r)::text as row from ({rule}) r

-- name: last_link_check
-- Hub: the latest finished check of one link.
select id, verdict, repaired_at from sync.check_runs
 where kind = 'link' and name = $1 and finished_at is not null
 order by id desc limit 1

-- name: check_diffs
-- Hub: the differing keys of one check run.
select kind, key_a::text as key_a, key_b::text as key_b from sync.check_diffs where run_id = $1

-- name: mark_repaired
-- Hub: the check run's keys were signalled by a repair.
update sync.check_runs set repaired_at = clock_timestamp() where id = $1

-- name: signal_keys
-- Source: queue repair signals for keys given in source column names. Op R: the
-- operator chose this side, so a two-way link applies it without a conflict check.
insert into sync.queue (link, side, op, key, origin)
select $1, $2, 'R', k, $3 from jsonb_array_elements($4::jsonb) as k

-- name: notify
-- Source: wake the bridge's drain loop of one link side.
select pg_notify('syncbridge', $1)

-- name: last_check_time
-- Hub: when a link was last checked (for check_every).
select max(started_at) from sync.check_runs where kind = 'link' and name = $1

-- name: resync_requests
-- Hub: sync.resync() requests not yet started.
select id::text, link, side from sync.backfill_runs where status = 'requested' order by started_at

-- The backfill statements below run on psycopg (%(name)s parameters).

-- name: backfill_page
-- Source: signal the next chunk of keys after the stored position, in key order
-- (keyset: one index range scan, never OFFSET); returns the count and the last key.
with page as (
    select {key_cols} from {table} t
     {where}
     order by {key_cols}
     limit %(limit)s
), signalled as (
    insert into sync.queue (link, side, op, key, origin)
    select %(link)s, %(side)s, 'K', {key_obj}, 'syncbridge:backfill' from page t
)
select count(*) as n,
       (select jsonb_build_array({key_text}) from page t
         order by {key_cols_desc} limit 1) as last_key
  from page

-- name: count_rows
-- Rows of a link side's table (filtered or not): backfill's total, check's recount.
select count(*) from {table} t {where}

-- name: backfill_keys
-- Source: signal keys listed by the operator (jsonb array, source column names).
insert into sync.queue (link, side, op, key, origin)
select %(link)s, %(side)s, 'K', k, 'syncbridge:backfill'
  from jsonb_array_elements(%(keys)s::jsonb) as k

-- name: backfill_pending
-- Source: backfill signals of one link side still queued or claimed (the throttle).
select count(*) from sync.queue
 where link = %(link)s and side = %(side)s and origin = 'syncbridge:backfill'

-- name: backfill_open
-- Source: the unfinished run of a link side with the same filter, to resume it.
select id, last_key, signalled, total from sync.backfill_runs
 where link = %(link)s and side = %(side)s and filter = %(filter)s and status = 'running'
 order by started_at desc limit 1

-- name: backfill_abandon
-- Source: give up unfinished runs of a link side (--restart).
update sync.backfill_runs set status = 'abandoned', finished_at = clock_timestamp()
 where link = %(link)s and side = %(side)s and status = 'running'

-- name: backfill_upsert
-- Source or hub: create or update one run's progress row.
insert into sync.backfill_runs as r
       (id, link, side, filter, last_key, signalled, total, status, finished_at)
values (%(id)s, %(link)s, %(side)s, %(filter)s, %(last_key)s, %(signalled)s, %(total)s,
        %(status)s, case when %(status)s = 'finished' then clock_timestamp() end)
on conflict (id) do update
   set last_key = excluded.last_key, signalled = excluded.signalled, total = excluded.total,
       status = excluded.status, filter = excluded.filter,
       finished_at = excluded.finished_at, updated_at = clock_timestamp()

-- name: key_span
-- Lowest and highest key and the planner's row estimate: integer keys are
-- chunked by arithmetic on this instead of a scan of every key.
select min(t.{key})::text as lo, max(t.{key})::text as hi,
       (select greatest(c.reltuples, 0)::bigint from pg_class c
         where c.oid = {table_literal}::regclass) as estimate
  from {table} t

-- name: bridge_alive
-- Hub: an active bridge has beaten within two of its heartbeat intervals.
select exists (select 1 from sync.bridges
                where role = 'active' and heartbeat > clock_timestamp() - 2 * heartbeat_interval)
