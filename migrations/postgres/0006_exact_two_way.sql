-- depends: 0005_status_view
-- Exact values and two-way links that never undo an edit (issues 11 and 12).
--
-- Row images are now the columns' text representations (engine/pg_sql.py), so
-- images written by earlier versions (typed JSON) cannot be compared with new
-- ones: they are kept but marked unknown. A row whose base is unknown takes
-- the incoming change instead of being judged a conflict; `syncbridge install`
-- (run again after upgrading) records a known base for every row equal on both
-- sides.
alter table sync.row_state
    add column known boolean not null default true,
    add column synced_at timestamptz not null default clock_timestamp();
update sync.row_state set known = false;

-- Which columns both sides changed (merge), and winner 'merge' for a
-- column-wise merge that kept both sides' edits.
alter table sync.conflicts add column columns text[];
alter table sync.conflicts drop constraint conflicts_winner_check;
alter table sync.conflicts alter column winner type text;
alter table sync.conflicts
    add constraint conflicts_winner_check check (winner in ('a', 'b', 'merge'));

-- The linked columns of a table as the bridge sees them: the drain compares it
-- before each batch, so DDL on a linked table pauses the link instead of
-- being absorbed (added columns silently not synced, or every edit a conflict).
create function sync.table_shape(p_table regclass)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
    select coalesce(jsonb_agg(jsonb_build_array(
               a.attname::text, format_type(a.atttypid, a.atttypmod),
               coalesce(a.attnum = any(i.indkey), false)) order by a.attnum), '[]')
      from pg_attribute a
      left join pg_index i on i.indrelid = a.attrelid and i.indisprimary
     where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped
       and a.attgenerated = ''
$$;

