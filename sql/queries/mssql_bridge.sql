-- Runtime SQL (asyncpg, $n parameters) of the drains whose other side is SQL
-- Server (engine/mssql_drain.py). The T-SQL side lives in sql/sqlserver/ct.sql;
-- the statements shared with Postgres-to-Postgres links stay in bridge.sql.

-- name: ct_cursor_read
-- Postgres sink: where the SQL Server source of this link side was read up to.
select version, db_identity, updated_at from sync.ct_cursor where link = $1 and source_side = $2

-- name: ct_cursor_write
-- Postgres sink: the new cursor, in the same transaction as the rows read up to it.
insert into sync.ct_cursor as c (link, source_side, version, db_identity)
values ($1, $2, $3, $4)
on conflict (link, source_side) do update
   set version = excluded.version, db_identity = excluded.db_identity,
       updated_at = clock_timestamp()

-- name: report_note
-- Hub: an event an operator must see in sync.status (last_error) that is not a failed attempt (resync).
insert into sync.link_state as s (link, source_side, last_error, last_error_at)
values ($1, $2, $3, clock_timestamp())
on conflict (link, source_side) do update
   set last_error = excluded.last_error, last_error_at = excluded.last_error_at

-- name: requeue_keys
-- Postgres source: fresh, delayed signals for the keys a SQL Server sink could not take yet ($3: problems with "defer": true and "attempts").
insert into sync.queue (link, side, op, key, attempts, retry_at)
select $1, $2, 'K', e -> 'key', (e ->> 'attempts')::int + 1,
       clock_timestamp() + make_interval(secs => least(60, $4 * power(2, (e ->> 'attempts')::int)))
  from jsonb_array_elements($3::jsonb) e
 where (e ->> 'defer')::boolean

-- name: ct_retry_keys
-- Hub: dead-lettered keys of a SQL Server source to read again: asked for by sync.retry_dead(), or a foreign-key miss still within its attempts (after a backoff).
select key::text as key from sync.dead_letter
 where link = $1 and source_side = $2
   and (status = 'retry'
        or (status = 'open' and error like '[23503]%' and attempts < $3
            and last_seen < clock_timestamp() - make_interval(secs => least(60, power(2, attempts)))))
 order by id
 limit $4

-- name: ct_retry_taken
-- Hub: the retried keys were read again; entries that fail again are refreshed by dead_letter.
update sync.dead_letter set status = 'open', last_seen = clock_timestamp()
 where link = $1 and source_side = $2 and key = any($3::jsonb[]) and status = 'retry'
