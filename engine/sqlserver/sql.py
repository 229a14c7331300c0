"""The T-SQL the engine sends to a SQL Server peer, rendered from sql/sqlserver/ct.sql,
and the one quoting helper (`qi`) every T-SQL template is filled with.

The static text lives in the .sql file; this module only splices in
identifiers quoted by `qi` (brackets, `]` doubled), type names that passed a
strict pattern, and lists built from those. Values are always `?` parameters,
declared as typed T-SQL variables at the top of each batch so that every
statement of the batch can use them by name.

Each renderer returns a `Rendered`: the SQL and the names of its `?`
parameters in order, so the adapter binds by name and a test can check both.

Change tracking setup and the reads are here; the statements that carry rows
as one OPENJSON parameter (the apply batch) are in openjson.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Side
from syncbridge.engine.sqlserver import types

SQL = sqlfiles.Queries("sqlserver/ct.sql")
MAX_IDENTIFIER = 128  # sysname
RETENTION_UNITS = ("DAYS", "HOURS", "MINUTES")
MIN_COMPAT_LEVEL = 130  # OPENJSON (learn.microsoft.com/sql/t-sql/functions/openjson-transact-sql)

_TYPE = re.compile(r"^[a-z][a-z0-9]*(\((max|\d{1,4})(,\d{1,2})?\))?$")
_COLLATION = re.compile(r"^[A-Za-z0-9_]{1,128}$")


@dataclass(frozen=True)
class Rendered:
    """One batch of T-SQL and the names of its `?` parameters, in order."""

    sql: str
    params: tuple[str, ...] = ()


def qi(name: str) -> str:
    """Bracket-quote one identifier, doubling `]`: the only quoting T-SQL needs inside [...]."""
    if not name or len(name) > MAX_IDENTIFIER or "\x00" in name:
        raise ValueError(f"{name!r} is not a valid SQL Server identifier")
    return "[" + name.replace("]", "]]") + "]"


def qualified(schema: str, table: str) -> str:
    return f"{qi(schema)}.{qi(table)}"


def side_name(side: Side) -> str:
    """The bracket-quoted name passed to OBJECT_ID(?) (a parameter, so no N'' literal is needed)."""
    return qualified(side.schema, side.table)


def sql_type(spelled: str) -> str:
    """A column type safe to splice: lower-case name with optional (n|max[,s])."""
    t = spelled.replace(" ", "").lower()
    if not _TYPE.match(t):
        raise ValueError(f"refusing to splice type {spelled!r} into T-SQL")
    return t


def collate(collation: str | None) -> str:
    if not collation:
        return ""
    if not _COLLATION.match(collation):
        raise ValueError(f"refusing to splice collation {collation!r} into T-SQL")
    return f" COLLATE {collation}"


def render_tsql(queries: sqlfiles.Queries, name: str, **fields: str | tuple[str, ...]) -> str:
    """A T-SQL template of `queries` with its {fields} filled (sqlfiles.Queries.render is
    psycopg's, whose double-quoted identifiers are not T-SQL's): a tuple is an identifier
    (qualified when longer than one), quoted by qi; a str is T-SQL text the caller built
    from qi, sql_type and fixed words, never a value (values are `?` parameters)."""
    return queries[name].format(**{
        k: ".".join(qi(p) for p in v) if isinstance(v, tuple) else v
        for k, v in fields.items()})


def render(name: str, **fields: str | tuple[str, ...]) -> str:
    return render_tsql(SQL, name, **fields)


# --- change tracking setup (all autocommit: ALTER DATABASE cannot run in a transaction) -----


# The `?` parameters of the statements without placeholders. "object" is the
# bracket-quoted schema.table from side_name(), passed to OBJECT_ID(?).
STATIC_PARAMS: dict[str, tuple[str, ...]] = {
    "db_ct_state": (), "db_snapshot_state": (), "db_name": (), "db_identity": (),
    "db_compat": (), "db_ct_version": (), "db_updateability": (), "db_collation": (),
    "server_facts": (),
    "poll": ("object", "object"), "table_ct_state": ("object",), "table_pk": ("object",),
    "versions": ("object",), "table_columns": ("object",), "table_pk_columns": ("object",),
    "applied": ("batch",), "cursor_read": ("link", "source_side"),
    "client_version_read": ("link", "source_side"),
    "client_version_write": ("link", "source_side", "version"),
    "prune_applied": ("days",), "has_perms": ("object", "permission"),
    "state_forget": ("link",), "resend_read": ("n", "link", "source_side"),
    "resend_done": ("link", "source_side", "keys"),
    "resend_request": ("link", "source_side", "keys"),
}


def static(name: str) -> Rendered:
    """A statement without placeholders (the names in STATIC_PARAMS)."""
    return Rendered(SQL[name], STATIC_PARAMS[name])


def state_write() -> Rendered:
    """The bases of a SQL Server source, written after its Postgres sink committed the rows:
    the apply batch's own state statement behind its two parameters."""
    return Rendered(SQL["state_vars"] + "\n" + SQL["apply_state"], ("link", "states"))


def poll_tables(count: int) -> Rendered:
    """The per-peer poll for `count` tables: parameters obj0, obj1, ... (side_name())."""
    if count < 1:
        raise ValueError("poll_tables needs at least one table")
    values = ", ".join(f"({i}, CAST(? AS nvarchar(600)))" for i in range(count))
    return Rendered(render("poll_tables", values=values), tuple(f"obj{i}" for i in range(count)))


def enable_db_snapshot(db: str) -> Rendered:
    return Rendered(render("enable_db_snapshot", db=qi(db)))


def enable_db_ct(db: str, retention: int = 7, unit: str = "DAYS") -> Rendered:
    """Database-level CT; retention must exceed the longest outage (default 7 days, MS: 2)."""
    if unit.upper() not in RETENTION_UNITS or not isinstance(retention, int) or retention < 1:
        raise ValueError(f"change retention {retention} {unit} is not valid")
    return Rendered(render("enable_db_ct", db=qi(db), retention=str(retention), unit=unit.upper()))


def set_db_retention(db: str, retention: int, unit: str = "DAYS") -> Rendered:
    """A longer retention on a database that has change tracking on already."""
    if unit.upper() not in RETENTION_UNITS or not isinstance(retention, int) or retention < 1:
        raise ValueError(f"change retention {retention} {unit} is not valid")
    return Rendered(render("set_db_retention", db=qi(db), retention=str(retention),
                       unit=unit.upper()))


def disable_db_ct(db: str) -> Rendered:
    return Rendered(render("disable_db_ct", db=qi(db)))


def enable_table_ct(side: Side) -> Rendered:
    return Rendered(render("enable_table_ct", table=side_name(side)))


def disable_table_ct(side: Side) -> Rendered:
    return Rendered(render("disable_table_ct", table=side_name(side)))


# --- reading -----------------------------------------------------------------------------


def read_expr(alias: str, name: str, spelled: str) -> str:
    """A column as the bridge reads it: datetimeoffset as text, since pyodbc cannot read -155."""
    col = f"{alias}.{qi(name)}"
    if types.parse_mssql(spelled).kind == "timestamptz":
        return f"CAST({col} AS nvarchar(40))"  # reference §2.5/§4: read via CAST
    return col


def _key_join(left: str, right: str, cols: list[str]) -> str:
    """l.[k1] = r.[k1] AND ...: both sides are the same table's columns, so one collation."""
    return " AND ".join(f"{left}.{qi(c)} = {right}.{qi(c)}" for c in cols)


def changes(shape: LinkShape, side: str, *, first: bool = True) -> Rendered:
    """One page of CHANGETABLE(CHANGES ...) since @last, up to version @upto, joined to
    current values, own writes filtered, in key order (after the previous page's last
    key unless `first`).

    Result columns: SYS_CHANGE_VERSION, SYS_CHANGE_OPERATION, sb_present (0 =
    row gone, delete it whatever the operation says), then every linked column
    in `shape.cols(side)` order: keys from `ct` (they survive a delete), the
    rest from `t` (NULL for a deleted row). Rows changed after @upto are left
    for the next window, so paging never skips or loses a change.
    """
    table = shape.table(side)
    keys, cols = shape.key_cols(side), shape.cols(side)
    select = [
        read_expr("ct" if c in keys else "t", c, table.columns[c].type) for c in cols
    ]
    key_vars = "" if first else ", " + ", ".join(
        f"@k{i} {sql_type(table.columns[k].type)} = ?" for i, k in enumerate(keys))
    after = "" if first else "\n   AND (" + keyset_after(keys, "ct") + ")"
    return Rendered(
        render(
            "changes",
            present=qi(keys[0]),
            select_list=",\n       ".join(select),
            table=qualified(table.schema, table.name),
            join=_key_join("t", "ct", keys),
            key_vars=key_vars,
            after=after,
            order=", ".join(f"ct.{qi(k)}" for k in keys),
        ),
        ("last", "ctx", "upto", "n", *(() if first else (f"k{i}" for i in range(len(keys))))),
    )


def keys_page(shape: LinkShape, side: str, *, first: bool, values: bool = False) -> Rendered:
    """One page of keys (or whole rows when values=True) in key order, for resync/backfill.

    Keyset pagination: the next page starts after the last key seen, spelled as
    (k1 > @k1) OR (k1 = @k1 AND k2 > @k2) ..., so each page is an index seek;
    never OFFSET, whose cost grows with the page number. The order is SQL
    Server's (uniqueidentifier sorts differently from Postgres uuid), so pages
    are only ever compared with this same table.
    """
    table = shape.table(side)
    keys = shape.key_cols(side)
    cols = shape.cols(side) if values else keys
    select = ", ".join(read_expr("t", c, table.columns[c].type) for c in cols)
    order = ", ".join(f"t.{qi(k)}" for k in keys)
    name = qualified(table.schema, table.name)
    if first:
        return Rendered(render("keys_first_page", select_list=select, table=name,
                                order=order), ("n",))
    kvars = ", ".join(f"@k{i} {sql_type(table.columns[k].type)} = ?" for i, k in enumerate(keys))
    return Rendered(
        render("keys_next_page", key_vars=kvars, select_list=select, table=name,
           after=keyset_after(keys), order=order),
        ("n", *(f"k{i}" for i in range(len(keys)))),
    )


def keyset_after(keys: list[str], alias: str = "t") -> str:
    """(k0 > @k0) OR (k0 = @k0 AND k1 > @k1) OR ... for a composite key."""
    terms = []
    for i, k in enumerate(keys):
        eq = [f"{alias}.{qi(keys[j])} = @k{j}" for j in range(i)]
        terms.append("(" + " AND ".join([*eq, f"{alias}.{qi(k)} > @k{i}"]) + ")")
    return "\n    OR ".join(terms)
