-- Per-link reads of Postgres tables (engine/postgres/sql.py), rendered once per
-- link side: the braced fields are filled by psycopg.sql (identifiers quoted by
-- psycopg, objects built by sql.py); $n are asyncpg parameters.
-- An entry's description line is part of its statement: it holds no $, % or braces.

-- name: read_rows
-- Source rows for a batch of keys (jsonb, source names): row or null, key and ka in sink and side-a names (ka null: the same as key), the signal's key, the image.
select case when t.{first_key} is null then null else {row} end as row,
       {key} as key, {ka} as ka, {skey} as skey, {img} as img
  from jsonb_to_recordset({keys}) as k({key_defs})
  {rows_of_keys}

-- name: rows_joined
-- read_rows' join of the keys to the table, the planner's choice: a batch of many keys on a small table reads best as one hash join over it.
left join {table} t on {join}

-- name: rows_looked_up
-- read_rows' join in take_rows (a few keys): one primary-key lookup a key. A generic plan guesses 100 keys, so as a plain join it scans a table of a few thousand rows whole at every take (0.3 to 0.6 ms of a one-row take); OFFSET 0 keeps the subquery a lookup the planner cannot merge back into that join.
left join lateral (select * from {table} t where {join} offset 0) t on true

-- name: take_rows
-- The rows field of a take (queue.sql take): on its first row, when it took fewer signals than the sixth parameter, read_rows of their keys in the same statement and snapshot (empty: no key), else null (the drain reads them itself).
,
       case when row_number() over () = 1 and (select count(*) < $6 from taken)
            then (select coalesce(array_agg(r), '{{}}') from ({read}) r) end as rows

-- name: taken_keys
-- The keys read_rows reads in take_rows: the key signals the take deleted, one per spelling (1.0 and 1.00 are two, as the drain counts them), as one jsonb array.
(select jsonb_agg(k::jsonb) from (select distinct key::text as k from taken
                                    where op = 'K' or op = 'R') d)

-- name: found_or_signal
-- A key as the found row spells it, or as the signal did for a missing row (read_rows: key, ka).
case when t.{first_key} is null then {signal} else {found} end

-- name: row_image
-- A found row's image in side-a names, null for a missing row (two-way links).
case when t.{first_key} is null then null else {image} end

-- name: state_read
-- The sink's current rows for a batch of keys (jsonb, sink names) and the link's last-synced images, named as on side a.
select {ka_signal}::text as ka,
       case when t.{first_key} is null then null else {cur} end::text as cur,
       rs.image::text as last, coalesce(rs.known, true) as known
  from jsonb_to_recordset($1::jsonb) as k({key_defs})
  left join {table} t on {join}
  -- the base is kept under the key as the sink row spells it
  left join sync.row_state rs
    on rs.link = $2
   and rs.key = case when t.{first_key} is null then {ka_signal} else {ka_found} end

-- name: has_rows
-- Does the table (as the link reads it) hold any row (install says then what to backfill).
select exists (select 1 from {table} t)

-- name: source_rows
-- A source side as the link reads it: the rows its filter matches, a transformed column in place of the column.
(select {cols} from {table} t where ({where}))

-- name: probe_where
-- Validate a link filter against its table without reading a row.
select 1 from {table} t where ({where}) limit 0

-- name: probe_transform
-- Validate a transform expression against its table without reading a row (its result type).
select ({expr}) as v from {table} t limit 0

-- name: type_name
-- A result column type as the catalog spells it (run under search_path pg_catalog).
select format_type(%s, %s)

-- name: copy_rows
-- The staged path: a batch's source rows as COPY gives them, found or not first, then the linked columns as text (a missing row only its key, as the signal spells it); the batch's keys go where the NUL is.
select t.{first_key} is not null, {cols}
  from {table} t
 right join jsonb_to_recordset({keys}::jsonb) as k({key_defs}) on {join}
