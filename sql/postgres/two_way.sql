-- What install checks and prepares for two-way links (engine/postgres/two_way.py).
-- psycopg parameters (%s, %(name)s); braced fields are filled by psycopg.sql.
-- An entry's description line is part of its statement: it holds no $, % or braces.

-- name: sequence_of
-- The sequence filling a column (serial or identity): increment, start, min, max, is identity.
select s.seqincrement, s.seqstart, s.seqmin, s.seqmax, a.attidentity <> ''
  from pg_attribute a
  join pg_sequence s on s.seqrelid = pg_get_serial_sequence(%(table)s, a.attname)::regclass
 where a.attrelid = %(table)s::regclass and a.attname = %(column)s

-- name: user_triggers
-- The user's own triggers on a table (not internal, not syncbridge's capture triggers).
select t.tgname from pg_trigger t
 where t.tgrelid = %s::regclass and not t.tgisinternal and t.tgname not like 'syncbridge\_%%'
 order by t.tgname

-- name: key_top
-- The highest key value of a table (0 when empty).
select coalesce(max({column}), 0) from {table}

-- name: identity_restart
-- Make an identity column hand out every other value, from the given one on.
alter table {table} alter column {column}
  set increment by 2 set start with {restart} restart with {restart}

-- name: serial_sequence
-- The schema and name of the sequence of a serial column of a table.
select n.nspname, c.relname
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.oid = pg_get_serial_sequence(%s, %s)::regclass

-- name: sequence_restart
-- Make a sequence hand out every other value, from the given one on.
alter sequence {sequence} increment by 2 start with {restart} restart with {restart}
