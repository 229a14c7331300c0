-- Capture trigger function for one side of one link (rendered per link by
-- engine/postgres/capture.py with psycopg.sql; the braced names are quoted identifiers
-- or literals). Statement-level: one INSERT ... SELECT from the transition
-- table and at most one pg_notify per statement, whatever the row count.
-- SECURITY DEFINER so application roles need no grant on sync.queue.
-- Pinned print settings: a key is queued as text the bridge reads back to the same
-- value, whatever the writer's session prints (a float's shortest exact digits, an
-- interval whose fields keep their signs, money in C's format).
-- Writes carrying the origin of this link's other side are the bridge's own
-- applies: they are not signalled back (echo suppression).
-- The NOTIFY is sent only while the bridge sleeps on LISTEN (it then holds the side's
-- wake lock, see the notify entry): a commit that notifies holds a database-wide lock
-- through its flush, so concurrent notifying writers cannot share a WAL flush.
-- An entry's description line is part of its statement: it holds no $, % or braces.

-- name: function
-- The capture function of one link side: queue the keys a statement touched, notify once.
create or replace function sync.{fn}() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
set extra_float_digits = 3
set intervalstyle = postgres
set lc_monetary = 'C'
as $body$
declare
    v_origin text := nullif(current_setting('syncbridge.origin', true), '');
begin
    if v_origin = {echo} then
        return null;
    end if;
    if tg_op = 'TRUNCATE' then
        {truncate}
    elsif tg_op = 'INSERT' then
        insert into sync.queue (link, side, key, origin)
        select {link}, {side}, {key_new}, v_origin from new_rows n;
    elsif tg_op = 'DELETE' then
        insert into sync.queue (link, side, key, origin)
        select {link}, {side}, {key_old}, v_origin from old_rows o;
    else
        -- old keys too: a changed key must remove the old row on the sink
        insert into sync.queue (link, side, key, origin)
        select {link}, {side}, k, v_origin
          from (select {key_new} as k from new_rows n
                union
                select {key_old} from old_rows o) changed;
    end if;
    {notify}
    return null;
end
$body$;

-- name: notify
-- Wake the bridge only if it sleeps: it holds the wake lock then and this try fails. Otherwise the lock, shared, is kept to commit, so the bridge cannot go to sleep before this transaction's rows are visible to it (bridge/listening.py).
if not pg_try_advisory_xact_lock_shared({lock_class}, {lock_key}) then
    perform pg_notify({channel}, {payload});
end if;

-- name: arm
-- Bridge, on its LISTEN connection: hold one side's wake lock before sleeping. It waits for the writers that hold it shared, while new ones fail their try and notify, up to the session's lock_timeout.
select pg_advisory_lock($1, $2)

-- name: disarm
-- Bridge, on its LISTEN connection: let go of one side's wake lock while it drains anyway.
select pg_advisory_unlock($1, $2)

-- name: end_listen_orphan
-- Bridge, on a new LISTEN connection: end the backend of the session it lost, should the server still keep it (and its wake locks).
select pg_terminate_backend(pid) from pg_stat_activity
 where pid = $1 and application_name = 'syncbridge-listen' and usename = current_user
   and pid <> pg_backend_pid()

-- name: truncate_propagate
-- The TRUNCATE branch of a link with truncate = propagate: the sink is emptied too.
insert into sync.queue (link, side, op, origin) values ({link}, {side}, 'T', v_origin);

-- name: truncate_ignore
-- The TRUNCATE branch of a link with truncate = ignore: nothing is queued, the sink keeps its rows.
return null;

-- name: truncate_refuse
-- The TRUNCATE branch of a link with truncate = refuse: the statement fails, nothing is emptied.
raise exception using
    errcode = 'feature_not_supported',
    message = 'TRUNCATE of ' || tg_table_schema || '.' || tg_table_name
              || ' is refused: syncbridge link ' || {link} || ' has truncate = refuse',
    hint = 'delete the rows instead, or set truncate to propagate or ignore for the link '
           'and run syncbridge install again';

-- name: drop_trigger
-- Drop one capture trigger of a table, if it is there.
drop trigger if exists {trigger} on {table}

-- name: create_trigger
-- One statement-level capture trigger of one event, with its transition tables.
create trigger {trigger} after {verb} on {table} {referencing}
   for each statement execute function sync.{fn}()

-- name: drop_function
-- Drop the capture function of one link side, if it is there.
drop function if exists sync.{fn}()

-- name: table_exists
-- Whether the table is there at all (a side may have been dropped before uninstall).
select to_regclass(%s)
