-- Catalog reads of the Postgres tables a config names (engine/catalog.py,
-- engine/validate.py). Fixed statements with psycopg %(name)s / %s parameters;
-- the table comes as quoted qualified text (catalog.quote_qualified).
-- An entry's description line is part of its statement: it holds no $, % or braces.

-- name: table_columns
-- Linked-table columns in ordinal order: name, type, nullable, domain base type, user type's definition (run with search_path = pg_catalog so user types come qualified).
select a.attname, format_type(a.atttypid, a.atttypmod), not a.attnotnull,
       case when ty.typtype = 'd' then format_type(ty.typbasetype, ty.typtypmod) end,
       case et.typtype  -- a user type's definition (of an array's element type)
       when 'd' then format_type(et.typbasetype, et.typtypmod)
            || case when et.typnotnull then ' not null' else '' end
            || coalesce((select ' ' || string_agg(pg_get_constraintdef(c.oid), ' '
                                                  order by c.conname)
                           from pg_constraint c where c.contypid = et.oid), '')
       when 'c' then (select string_agg(f.attname || ' ' || format_type(f.atttypid, f.atttypmod),
                                        ', ' order by f.attnum)
                        from pg_attribute f
                       where f.attrelid = et.typrelid and f.attnum > 0 and not f.attisdropped)
       when 'e' then (select string_agg(quote_literal(e.enumlabel), ', '
                                        order by e.enumsortorder)
                        from pg_enum e where e.enumtypid = et.oid)
       end
  from pg_attribute a
  join pg_type ty on ty.oid = a.atttypid
  join pg_type et on et.oid = case when ty.typcategory = 'A' and ty.typelem <> 0
                                   then ty.typelem else ty.oid end
 where a.attrelid = to_regclass(%(qualified)s) and a.attnum > 0 and not a.attisdropped
   and a.attgenerated = ''
 order by a.attnum

-- name: primary_key
-- The primary key's columns in key order.
select a.attname
  from pg_index i
  join lateral unnest(i.indkey) with ordinality k(attnum, ord) on true
  join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
 where i.indrelid = to_regclass(%(qualified)s) and i.indisprimary
 order by k.ord

-- name: must_fill
-- NOT NULL columns an INSERT must fill: no default, not identity, not generated.
select a.attname
  from pg_attribute a
 where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped
   and a.attnotnull and not a.atthasdef and a.attidentity = '' and a.attgenerated = ''
 order by a.attnum
