"""A normalised, diffable text of the `sync` schema, read from the catalogs.

Used by tests/test_schema_snapshot.py. One block per object, in name order,
written as SQL a reader recognises: tables with their columns, constraints,
indexes and triggers; views; functions with their grants; types and
sequences. The current user's name in grants reads OWNER, so the text does
not depend on who ran the migrations.
"""

from __future__ import annotations

import re

import psycopg

_TABLES = """
select c.oid, c.relname, c.relkind, c.relacl::text from pg_class c
 where c.relnamespace = 'sync'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S')
 order by c.relname
"""
_COLUMNS = """
select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
  from pg_attribute a
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
 where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
 order by a.attnum
"""
_CONSTRAINTS = """
select conname, pg_get_constraintdef(oid) from pg_constraint
 where conrelid = %s and contype <> 'n'  -- NOT NULL (a pg_constraint row since 18): columns
 order by conname
"""
_INDEXES = """
select pg_get_indexdef(i.indexrelid) from pg_index i
  join pg_class c on c.oid = i.indexrelid
 where i.indrelid = %s
   and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid
                                                  and k.conrelid = i.indrelid)
 order by c.relname
"""
_TRIGGERS = """
select pg_get_triggerdef(oid) from pg_trigger
 where tgrelid = %s and not tgisinternal order by tgname
"""
_FUNCTIONS = """
select p.oid, p.proname, pg_get_function_identity_arguments(p.oid),
       pg_get_functiondef(p.oid), p.proacl::text
  from pg_proc p
 where p.pronamespace = 'sync'::regnamespace
 order by p.proname, pg_get_function_identity_arguments(p.oid)
"""
_TYPES = """
select t.typname, t.typtype,
       (select string_agg(quote_literal(e.enumlabel), ', ' order by e.enumsortorder)
          from pg_enum e where e.enumtypid = t.oid)
  from pg_type t
 where t.typnamespace = 'sync'::regnamespace and t.typtype in ('e', 'd', 'c')
   and (t.typrelid = 0 or (select relkind from pg_class where oid = t.typrelid) = 'c')
 order by t.typname
"""


def header(dsn: str) -> str:
    """First line of the canonical file: catalog text differs between major versions."""
    with psycopg.connect(dsn) as conn:
        version = conn.execute("select current_setting('server_version_num')::int / 10000"
                               ).fetchone()[0]
    return f"-- the sync schema after all migrations, PostgreSQL {version} (schema_snapshot.py)\n"


def snapshot(dsn: str) -> str:
    """The text of the `sync` schema of the database at dsn ('' when there is none)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("select to_regnamespace('sync')").fetchone()[0] is None:
            return ""
        user = conn.execute("select current_user").fetchone()[0]
        blocks = [_relation(conn, oid, name, kind, _acl(acl, user))
                  for oid, name, kind, acl in conn.execute(_TABLES).fetchall()]
        blocks += [_function(*row, user) for row in conn.execute(_FUNCTIONS).fetchall()]
        blocks += [_type(*row) for row in conn.execute(_TYPES).fetchall()]
    return "\n".join(b for b in blocks if b)


def _acl(text: str | None, user: str) -> str:
    return re.sub(rf"(?<![\w\"]){re.escape(user)}(?![\w\"])", "OWNER", text or "default")


def _relation(conn: psycopg.Connection, oid: int, name: str, kind: str, acl: str) -> str:
    grants = f"-- grants on sync.{name}: {acl}\n"
    if kind in ("v", "m"):
        body = conn.execute("select pg_get_viewdef(%s, true)", (oid,)).fetchone()[0]
        word = "view" if kind == "v" else "materialized view"
        return f"create {word} sync.{name} as\n{body.rstrip().rstrip(';')};\n" + grants
    if kind == "S":
        owned = conn.execute("select 1 from pg_depend where objid = %s and deptype in ('a', 'i')",
                             (oid,)).fetchone()
        return "" if owned else f"create sequence sync.{name};\n"
    cols = []
    for col, typ, notnull, default, identity, generated in conn.execute(_COLUMNS, (oid,)):
        line = f"    {col} {typ}"
        if notnull:
            line += " not null"
        if identity:
            line += " generated {} as identity".format("always" if identity == "a" else
                                                       "by default")
        elif generated:
            line += f" generated always as ({default}) stored"
        elif default is not None:
            line += f" default {default}"
        cols.append(line)
    out = [f"create table sync.{name} (\n" + ",\n".join(cols) + "\n);"]
    out += [f"alter table sync.{name} add constraint {c} {d};"
            for c, d in conn.execute(_CONSTRAINTS, (oid,))]
    out += [f"{d};" for (d,) in conn.execute(_INDEXES, (oid,))]
    out += [f"{d};" for (d,) in conn.execute(_TRIGGERS, (oid,))]
    return "\n".join(out) + "\n" + grants


def _function(_oid: int, name: str, args: str, body: str, acl: str | None, user: str) -> str:
    return (f"{body.rstrip()};\n"
            f"-- grants on sync.{name}({args}): {_acl(acl, user)}\n")


def _type(name: str, kind: str, labels: str | None) -> str:
    if kind == "e":
        return f"create type sync.{name} as enum ({labels});\n"
    return f"create type sync.{name}; -- typtype {kind}\n"
