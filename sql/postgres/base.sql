-- Seeding base images of two-way links (engine/postgres/base.py), rendered once
-- per link side: the braced fields are filled by psycopg.sql; %s are psycopg
-- parameters. Each row comes as (side-a key, key in the other side's names,
-- image in side-a names, own key), all as jsonb texts.
-- An entry's description line is part of its statement: it holds no $, % or braces.

-- name: first_page
-- The first page of a side's rows in key order (parameter: the page size).
select {ka}::text as ka, {other_key}::text as other_key, {image}::text as image,
       {own_key}::text as own_key
  from {table} t
 order by {order} limit %s

-- name: next_page
-- The page after a key, keyset and never OFFSET (parameters: the last own key as jsonb, the page size).
select {ka}::text as ka, {other_key}::text as other_key, {image}::text as image,
       {own_key}::text as own_key
  from {table} t, jsonb_populate_record(null::{table}, %s::jsonb) p
 where ({order}) > ({after})
 order by {order} limit %s

-- name: lookup
-- The rows of a side for a page of keys in its own names (jsonb): side-a key and image.
select {ka}::text as ka, {image}::text as image
  from jsonb_to_recordset(%s::jsonb) as k({key_defs})
  join {table} t on {join}
