-- Runtime SQL (asyncpg, $n parameters) of the drains whose other side is SQL
-- Server (engine/sqlserver/ct_to_pg.py, pg_to_ct.py). The T-SQL side lives in sql/sqlserver/ct.sql;
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

-- name: sweep_first
-- Postgres sink of a SQL Server source, resync sweep: the first page of sink keys (jsonb text, sink names) in key order; keyset pages, never OFFSET.
select {key_obj}::text as key from {table} t order by {order} limit $1

-- name: sweep_next
-- Resync sweep: the page of sink keys after key $2 (jsonb, sink names).
select {key_obj}::text as key
  from {table} t, jsonb_populate_record(null::{table}, $2::jsonb) a
 where ({order}) > ({after})
 order by {order}
 limit $1

-- name: sweep_delete
-- Resync sweep: delete the page's keys ($1) the source lacks ($2 = keys it has), sparing keys with a signal queued at the sink ($3 link, $4 sink side): a local write of a two-way link not yet at the source. Returns the deleted keys named as on side a (two-way links forget their bases).
delete from {table} t
 using jsonb_to_recordset($1::jsonb) as k({defs})
 where {tk_join}
   and not exists (select 1 from jsonb_to_recordset($2::jsonb) as p({defs}) where {pt_join})
   and not exists (select 1 from sync.queue sq
                    where sq.link = $3 and sq.side = $4 and sq.key = {key_obj})
returning {ka_obj}::text as ka

-- name: typed_read
-- Postgres source of a SQL Server sink: current rows for $1 (jsonb keys, source names) as typed columns k0.., c0.. (asyncpg's Decimal, datetime, bytes: never through a float); present is false for a gone key; ka and img (two-way links) are the key and the row named as on side a, values as text (img null when gone).
select {skey}::text as skey, {first_key} is not null as present, {key_list}, {col_list},
       {ka}::text as ka, {img}::text as img
  from jsonb_to_recordset($1::jsonb) as k({defs})
  left join {table} t on {join}

-- name: pg_rows
-- Two-way links with a SQL Server side: rows given as JSON ($1: array of objects in this Postgres table's column names) read through the table's own column types (json columns cast from their text, as the upsert does): image is the row named as on side a, each value as its text, exactly what a stored row shows (the canonical form both sides' bases use); c0.. the typed values.
select x.n, {image}::text as image, {typed_list}
  from jsonb_array_elements($1::jsonb) with ordinality as x(elem, n),
       lateral (select {typed} from jsonb_to_record(x.elem) as r({defs})) t
 order by x.n
