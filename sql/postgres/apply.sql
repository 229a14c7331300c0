-- Per-link writes on a Postgres sink (engine/postgres/sql.py), rendered once per
-- link side: the braced fields are filled by psycopg.sql; $1 is an asyncpg jsonb
-- array of rows (values as text) or of keys, in sink names.
-- An entry's description line is part of its statement: it holds no $, % or braces.

-- name: upsert
-- Insert or update the batch's rows; a row whose columns' texts are byte-for-byte unchanged is skipped.
insert into {table} as t ({cols})
overriding system value
select {values}
  from jsonb_to_recordset($1::jsonb) as r({defs})
    on conflict ({keys}) do update set {sets}
 where {current} is distinct from {incoming}

-- name: delete
-- Delete the rows of a batch of keys.
delete from {table} t
 using jsonb_to_recordset($1::jsonb) as k({key_defs})
 where {join}

-- name: truncate
-- Empty the sink table: its source was truncated.
delete from {table}

-- name: truncate_table
-- Empty the sink table with TRUNCATE (drain.py picks it when no foreign key references the table).
truncate {table}

-- name: stage
-- The staged path's table on a sink connection: found or not, then the linked columns typed as the sink's (a domain as its base type, checked when the row is inserted); emptied at every commit, or dropped when a user type would otherwise depend on it.
create temp table if not exists {stage} ({defs}) on commit {end}

-- name: upsert_staged
-- The staged path's upsert: the found rows of the staging table; a row whose columns' texts are byte-for-byte unchanged is skipped.
insert into {table} as t ({cols})
overriding system value
select {distinct} {values}
  from {stage} r
 where r.c0
    on conflict ({keys}) do update set {sets}
 where {current} is distinct from {incoming}

-- name: delete_staged
-- The staged path's delete: the rows of the keys the source no longer has.
delete from {table} t
 using {stage} k
 where not k.c0 and {join}
