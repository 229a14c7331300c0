"""The statements check, backfill and the SQL Server checksum render, pinned to the
text they had before the SQL moved into sql/ (issue 15): a refactor of how they are
rendered must not change what runs, so the canonical row texts and checksums stay."""

from __future__ import annotations

import re
from types import SimpleNamespace

import sqlglot

from syncbridge.engine.catalog import Column, LinkShape, Table
from syncbridge.engine.reconcile import backfill, canonical
from syncbridge.engine.reconcile.sides import SideSql


def _link_shape(a: Table, b: Table, pairs: tuple[tuple[str, str], ...]) -> LinkShape:
    """A LinkShape of two catalog tables, with only the link fields the renderers read."""
    sides = {"a": SimpleNamespace(schema=a.schema, table=a.name),
             "b": SimpleNamespace(schema=b.schema, table=b.name)}
    link = SimpleNamespace(name="L", key=list(a.pk), side=sides.__getitem__, where={},
                           transform={}, directions=lambda: [("a", "b")])
    return LinkShape(link, a, b, pairs)


def _shape() -> LinkShape:
    """A two-column key (text, timestamptz) plus a numeric, with names that need quoting
    and a table name holding `%` and braces (neither may reach a format string)."""
    a = Table('we"ird', "Ta%ble{x}", {"k1": Column("k1", "text", False),
                                      "k2": Column("k2", "timestamp with time zone", False),
                                      "n": Column("n", "numeric(12,2)", True)}, ("k1", "k2"))
    b = Table("sb", "tb", {"b_k1": Column("b_k1", "text", False),
                           "b_k2": Column("b_k2", "timestamp with time zone", False),
                           "b_n": Column("b_n", "numeric(12,2)", True)}, ("b_k1", "b_k2"))
    return _link_shape(a, b, (("k1", "b_k1"), ("k2", "b_k2"), ("n", "b_n")))


def _int_shape() -> LinkShape:
    """One integer key: check chunks it by arithmetic on key_span."""
    a = Table('we"ird', "Ta%ble{x}", {"id": Column("id", "integer", False)}, ("id",))
    b = Table("sb", "tb", {"id": Column("id", "integer", False)}, ("id",))
    return _link_shape(a, b, (("id", "id"),))


def _body(stmt: str) -> str:
    """The statement without its `-- description` lines (those may be reworded)."""
    return re.sub(r"^-- .*\n", "", stmt, flags=re.MULTILINE)


CHECKSUM = (
    'select count(*) as n,\n'
    '       coalesce(sum((\'x\' || left(md5(coalesce(octet_length(t."k1"::text)::text || \':'
    '\' || t."k1"::text, \'N\') || chr(30) || coalesce(octet_length(t."k2"::text)::text || \''
    ':\' || t."k2"::text, \'N\') || chr(30) || coalesce(octet_length(t."n"::text)::text || \''
    ':\' || t."n"::text, \'N\')), 16))::bit(64)::bigint), 0)::text as h\n'
    '  from "we""ird"."Ta%ble{x}" t\n'
    ' where (t."k1", t."k2") > ($1::text::text, $2::text::timestamp with time zone) and ('
    't."k1", t."k2") <= ($3::text::text, $4::text::timestamp with time zone)'
)

BOUNDARIES = (
    'select t."k1"::text, t."k2"::text\n'
    '  from (select t."k1", t."k2", row_number() over (order by t."k1", t."k2") as rn\n'
    '          from "we""ird"."Ta%ble{x}" t\n'
    '         where (t."k1", t."k2") > ($1::text::text, $2::text::timestamp with time zon'
    'e)) t\n'
    ' where rn % 7 = 0\n'
    ' order by t."k1", t."k2"'
)

BY_KEYS = (
    'select coalesce(octet_length(t."b_k1"::text)::text || \':\' || t."b_k1"::text, \'N\') ||'
    ' chr(30) || coalesce(octet_length(t."b_k2"::text)::text || \':\' || t."b_k2"::text, \'N'
    '\') as ck, jsonb_build_object(\'b_k1\', t."b_k1", \'b_k2\', t."b_k2")::text as k, array[c'
    'oalesce(octet_length(t."b_k1"::text)::text || \':\' || t."b_k1"::text, \'N\'), coalesce('
    'octet_length(t."b_k2"::text)::text || \':\' || t."b_k2"::text, \'N\'), coalesce(octet_le'
    'ngth(t."b_n"::text)::text || \':\' || t."b_n"::text, \'N\')] as f\n'
    '  from jsonb_to_recordset($1::jsonb) as k("b_k1" text, "b_k2" timestamp with time zo'
    'ne)\n'
    '  join "sb"."tb" t on t."b_k1" = k."b_k1" and t."b_k2" = k."b_k2"'
)

LEAF_ROWS = (
    'select coalesce(octet_length(t."k1"::text)::text || \':\' || t."k1"::text, \'N\') || chr'
    '(30) || coalesce(octet_length(t."k2"::text)::text || \':\' || t."k2"::text, \'N\') as ck'
    ', jsonb_build_object(\'k1\', t."k1", \'k2\', t."k2")::text as k, md5(coalesce(octet_leng'
    'th(t."k1"::text)::text || \':\' || t."k1"::text, \'N\') || chr(30) || coalesce(octet_len'
    'gth(t."k2"::text)::text || \':\' || t."k2"::text, \'N\') || chr(30) || coalesce(octet_le'
    'ngth(t."n"::text)::text || \':\' || t."n"::text, \'N\')) as h\n'
    '  from "we""ird"."Ta%ble{x}" t\n'
    ' where (t."k1", t."k2") <= ($1::text::text, $2::text::timestamp with time zone)'
)

SPAN = (
    'select min(t."id")::text as lo, max(t."id")::text as hi,\n'
    '       (select greatest(c.reltuples, 0)::bigint from pg_class c\n'
    '         where c.oid = \'"we""ird"."Ta%ble{x}"\'::regclass) as estimate\n'
    '  from "we""ird"."Ta%ble{x}" t'
)

PAGE = (
    'with page as (\n'
    # the table name's % is escaped too: the page runs with psycopg parameters
    '    select t."k1", t."k2" from "we""ird"."Ta%%ble{x}" t\n'
    '     where (t."k1", t."k2") > (%(k0)s::text::text, %(k1)s::text::timestamp with time'
    " zone) and (v like '%%x' and {a})\n"
    '     order by t."k1", t."k2"\n'
    '     limit %(limit)s\n'
    '), signalled as (\n'
    '    insert into sync.queue (link, side, op, key, origin)\n'
    '    select %(link)s, %(side)s, \'K\', jsonb_build_object(\'k1\', t."k1", \'k2\', t."k2"), '
    "'syncbridge:backfill' from page t\n"
    ')\n'
    'select count(*) as n,\n'
    '       (select jsonb_build_array(t."k1"::text, t."k2"::text) from page t\n'
    '         order by t."k1" desc, t."k2" desc limit 1) as last_key\n'
    '  from page'
)

TSQL = (
    "SELECT COUNT_BIG(*) AS n, SUM(CAST(CAST(SUBSTRING(HASHBYTES('MD5', COALESCE(':' + CA"
    'ST((CONVERT(varchar(20), [id])) COLLATE Latin1_General_100_CI_AS_SC_UTF8 AS varchar('
    "max)), 'N') + CHAR(30) + COALESCE(CONVERT(varchar(20), DATALENGTH(CAST((CAST([co]]de"
    "] AS nvarchar(max))) COLLATE Latin1_General_100_CI_AS_SC_UTF8 AS varchar(max)))) + '"
    ":' + CAST((CAST([co]]de] AS nvarchar(max))) COLLATE Latin1_General_100_CI_AS_SC_UTF8"
    " AS varchar(max)), 'N') + CHAR(30) + COALESCE(':' + CAST((CASE WHEN CHARINDEX('.', C"
    'ONVERT(varchar(60), [n])) = 0 THEN CONVERT(varchar(60), [n]) ELSE REPLACE(RTRIM(REPL'
    "ACE(REPLACE(RTRIM(REPLACE(CONVERT(varchar(60), [n]), '0', ' ')), ' ', '0'), '.', ' '"
    ")), ' ', '.') END) COLLATE Latin1_General_100_CI_AS_SC_UTF8 AS varchar(max)), 'N')),"
    ' 1, 8) AS bigint) AS decimal(38, 0))) AS h FROM [d]]bo].[th ings] WHERE (([id] > ?) '
    'OR ([id] = ? AND [co]]de] > ?)) AND (([id] < ?) OR ([id] = ? AND [co]]de] <= ?))'
)


def test_check_statements_render_as_pinned():
    a, b = SideSql(_shape(), "a"), SideSql(_shape(), "b")
    assert _body(a.stmt("chunk_checksum", True, True)) == CHECKSUM
    assert _body(a.stmt("boundaries", True, False, step=7)) == BOUNDARIES
    assert _body(a.stmt("leaf_rows", False, True)) == LEAF_ROWS
    assert _body(b.by_keys()) == BY_KEYS
    side = SideSql(_int_shape(), "a")
    assert side.int_key and _body(side.span) == SPAN


def test_backfill_page_renders_as_pinned():
    pager = backfill._Pager(_shape(), "a", "v like '%x' and {a}")
    assert _body(pager.page(True).as_string(None)) == PAGE


def test_tsql_checksum_renders_as_pinned():
    cols = [("id", "int"), ("co]de", "text"), ("n", "numeric")]
    stmt = canonical.tsql_chunk_checksum("d]bo", "th ings", cols, ["id", "co]de"], True, True)
    assert _body(stmt) == TSQL
    [tree] = sqlglot.parse(stmt, read="tsql")
    assert tree is not None
