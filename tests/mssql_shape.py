"""The representative link the SQL Server tests render and run: every mapped type,
a composite key, and names that need quoting (`we]ird`, `col]x`).

Side a is Postgres (format_type() spellings), side b SQL Server (as
mssql_peer.read_table spells types). Direction `both`, so every pair is checked
in both directions by catalog.shape.
"""

from __future__ import annotations

from syncbridge.engine import catalog, config
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.sqlserver import openjson
from syncbridge.engine.sqlserver import sql as tsql
from syncbridge.engine.sqlserver import types as mssql_types

TABLE = "we]ird"
# (column, Postgres type, SQL Server type); the first two are the primary key.
COLUMNS: list[tuple[str, str, str]] = [
    ("id", "uuid", "uniqueidentifier"),
    ("k2", "integer", "int"),
    ("name", "text", "nvarchar(max)"),
    ("flag", "boolean", "bit"),
    ("small", "smallint", "smallint"),
    ("big", "bigint", "bigint"),
    ("amount", "numeric(18,4)", "decimal(18,4)"),
    ("ratio", "real", "real"),
    ("score", "double precision", "float"),
    ("seen_at", "timestamp without time zone", "datetime2(6)"),
    ("paid_at", "timestamp with time zone", "datetimeoffset(6)"),
    ("born", "date", "date"),
    ("slot", "time without time zone", "time(6)"),
    ("blob", "bytea", "varbinary(max)"),
    ("doc", "jsonb", "nvarchar(max)"),
    ("col]x", "text", "nvarchar(max)"),
]
KEY = ("id", "k2")

RAW = {
    "peers": {
        "portal": {"dialect": "postgres", "dsn": "postgresql://portal"},
        "clinic": {"dialect": "sqlserver", "dsn": "mssql://sa:pw@localhost:1433/clinic"},
    },
    "links": [{
        "name": "patients",
        "a": {"peer": "portal", "table": f"public.{TABLE}"},
        "b": {"peer": "clinic", "table": f"dbo.{TABLE}"},
        "key": list(KEY),
        "direction": "both",
    }],
}


def link() -> config.Link:
    return config.parse(RAW).links["patients"]


def pg_table() -> catalog.Table:
    cols = {n: catalog.Column(n, pg, n not in KEY) for n, pg, _ in COLUMNS}
    return catalog.Table("public", TABLE, cols, KEY)


def mssql_table() -> catalog.Table:
    cols = {n: catalog.Column(n, ms, n not in KEY) for n, _, ms in COLUMNS}
    return catalog.Table("dbo", TABLE, cols, KEY)


def shape(b: catalog.Table | None = None) -> catalog.LinkShape:
    checker = mssql_types.type_checker("postgres", "sqlserver")
    return catalog.shape(link(), pg_table(), b or mssql_table(), check_types=checker)


CREATE_TABLE = """
CREATE TABLE [dbo].[we]]ird] (
    id uniqueidentifier NOT NULL, k2 int NOT NULL, name nvarchar(max), flag bit,
    small smallint, big bigint, amount decimal(18,4), ratio real, score float,
    seen_at datetime2(6), paid_at datetimeoffset(6), born date, slot time(6),
    blob varbinary(max), doc nvarchar(max) CHECK (ISJSON(doc) = 1), [col]]x] nvarchar(max),
    CONSTRAINT weird_pk PRIMARY KEY (id, k2)
);
"""


def all_statements(shape: LinkShape, side: str, db: str = "clinic") -> dict[str, tsql.Rendered]:
    """Every statement the engine can emit for one SQL Server side, by name (tests, docs)."""
    s = shape.link.side(side)
    out = {n: tsql.static(n) for n in tsql.STATIC_PARAMS}
    out.update(
        enable_db_snapshot=tsql.enable_db_snapshot(db),
        enable_db_ct=tsql.enable_db_ct(db),
        disable_db_ct=tsql.disable_db_ct(db),
        set_db_retention=tsql.set_db_retention(db, 7),
        enable_table_ct=tsql.enable_table_ct(s),
        disable_table_ct=tsql.disable_table_ct(s),
        poll_tables=tsql.poll_tables(2),
        changes=tsql.changes(shape, side),
        changes_next_page=tsql.changes(shape, side, first=False),
        keys_first_page=tsql.keys_page(shape, side, first=True),
        keys_next_page=tsql.keys_page(shape, side, first=False),
        rows_first_page=tsql.keys_page(shape, side, first=True, values=True),
        rows_next_page=tsql.keys_page(shape, side, first=False, values=True),
        rows_for_keys=openjson.rows_for_keys(shape, side),
        apply=openjson.apply(shape, side),
        apply_identity_cursor=openjson.apply(shape, side, identity_insert=True, with_cursor=True),
        apply_two_way=openjson.apply(shape, side, with_state=True),
        state_read=openjson.state_read(shape, side),
        state_write=tsql.state_write(),
    )
    return out
