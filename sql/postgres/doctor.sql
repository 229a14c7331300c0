-- `syncbridge doctor`'s read-only checks of a Postgres peer (engine/doctor.py).
-- An entry's description line is part of its statement: it holds no $, % or braces.

-- name: server_facts
-- Version number and text, user, database, connection limits and use, whether the user may create the sync schema or it exists, whether it may create temporary tables.
select current_setting('server_version_num')::int, current_setting('server_version'),
       current_user, current_database(), current_setting('max_connections')::int,
       (select count(*) from pg_stat_activity),
       current_setting('superuser_reserved_connections')::int,
       has_database_privilege(current_database(), 'CREATE'),
       to_regnamespace('sync') is not null,
       has_database_privilege(current_database(), 'TEMPORARY')

-- name: table_exists
-- Whether the table (quoted qualified text) exists.
select to_regclass(%s) is not null

-- name: table_privilege
-- Whether the current user holds one privilege on the table.
select has_table_privilege(%s, %s)

-- name: triggers_present
-- How many of the named capture triggers exist on the table (quoted qualified text).
select count(*) from pg_trigger where tgrelid = to_regclass(%s) and tgname = any(%s)
