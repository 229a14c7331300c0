"""Every T-SQL statement the engine sends to a SQL Server peer, rendered from sql/sqlserver/ct.sql.

The static text lives in the .sql file; this module only splices in
identifiers quoted by `qi` (brackets, `]` doubled), type names that passed a
strict pattern, and lists built from those. Values are always `?` parameters,
declared as typed T-SQL variables at the top of each batch so that every
statement of the batch can use them by name.

Each renderer returns a `Rendered`: the SQL and the names of its `?`
parameters in order, so the adapter binds by name and a test can check both.

Rows travel to the apply batch as one JSON array (reference §2.1, OPENJSON).
Its objects use positional keys "c0", "c1", ... in `LinkShape.cols(side)`
order (key columns first), so no column name ever appears inside a JSON path
or a string literal, whatever characters it contains.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from syncbridge.engine.catalog import LinkShape, Table
from syncbridge.engine.config import Side
from syncbridge.engine.sqlfiles import query
from syncbridge.engine.sqlserver import types

SQL_FILE = "sqlserver/ct.sql"
MAX_IDENTIFIER = 128  # sysname
RETENTION_UNITS = ("DAYS", "HOURS", "MINUTES")
MIN_COMPAT_LEVEL = 130  # OPENJSON (learn.microsoft.com/sql/t-sql/functions/openjson-transact-sql)
APPLY_PARAMS = ("ctx", "rows", "dels", "batch", "link", "source_side", "signals", "version",
                "db_identity")

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


def _collate(collation: str | None) -> str:
    if not collation:
        return ""
    if not _COLLATION.match(collation):
        raise ValueError(f"refusing to splice collation {collation!r} into T-SQL")
    return f" COLLATE {collation}"


def _q(name: str, **fields: str) -> str:
    return query(SQL_FILE, name).format(**fields)


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
}


def static(name: str) -> Rendered:
    """A statement without placeholders (the names in STATIC_PARAMS)."""
    return Rendered(query(SQL_FILE, name), STATIC_PARAMS[name])


def poll_tables(count: int) -> Rendered:
    """The per-peer poll for `count` tables: parameters obj0, obj1, ... (side_name())."""
    if count < 1:
        raise ValueError("poll_tables needs at least one table")
    values = ", ".join(f"({i}, CAST(? AS nvarchar(600)))" for i in range(count))
    return Rendered(_q("poll_tables", values=values), tuple(f"obj{i}" for i in range(count)))


def enable_db_snapshot(db: str) -> Rendered:
    return Rendered(_q("enable_db_snapshot", db=qi(db)))


def enable_db_ct(db: str, retention: int = 7, unit: str = "DAYS") -> Rendered:
    """Database-level CT; retention must exceed the longest outage (default 7 days, MS: 2)."""
    if unit.upper() not in RETENTION_UNITS or not isinstance(retention, int) or retention < 1:
        raise ValueError(f"change retention {retention} {unit} is not valid")
    return Rendered(_q("enable_db_ct", db=qi(db), retention=str(retention), unit=unit.upper()))


def set_db_retention(db: str, retention: int, unit: str = "DAYS") -> Rendered:
    """A longer retention on a database that has change tracking on already."""
    if unit.upper() not in RETENTION_UNITS or not isinstance(retention, int) or retention < 1:
        raise ValueError(f"change retention {retention} {unit} is not valid")
    return Rendered(_q("set_db_retention", db=qi(db), retention=str(retention),
                       unit=unit.upper()))


def disable_db_ct(db: str) -> Rendered:
    return Rendered(_q("disable_db_ct", db=qi(db)))


def enable_table_ct(side: Side) -> Rendered:
    return Rendered(_q("enable_table_ct", table=side_name(side)))


def disable_table_ct(side: Side) -> Rendered:
    return Rendered(_q("disable_table_ct", table=side_name(side)))


# --- reading -----------------------------------------------------------------------------


def _read_expr(alias: str, name: str, spelled: str) -> str:
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
        _read_expr("ct" if c in keys else "t", c, table.columns[c].type) for c in cols
    ]
    key_vars = "" if first else ", " + ", ".join(
        f"@k{i} {sql_type(table.columns[k].type)} = ?" for i, k in enumerate(keys))
    after = "" if first else "\n   AND (" + _after(keys, "ct") + ")"
    return Rendered(
        _q(
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
    select = ", ".join(_read_expr("t", c, table.columns[c].type) for c in cols)
    order = ", ".join(f"t.{qi(k)}" for k in keys)
    name = qualified(table.schema, table.name)
    if first:
        return Rendered(_q("keys_first_page", select_list=select, table=name, order=order), ("n",))
    kvars = ", ".join(f"@k{i} {sql_type(table.columns[k].type)} = ?" for i, k in enumerate(keys))
    return Rendered(
        _q("keys_next_page", key_vars=kvars, select_list=select, table=name,
           after=_after(keys), order=order),
        ("n", *(f"k{i}" for i in range(len(keys)))),
    )


def _after(keys: list[str], alias: str = "t") -> str:
    """(k0 > @k0) OR (k0 = @k0 AND k1 > @k1) OR ... for a composite key."""
    terms = []
    for i, k in enumerate(keys):
        eq = [f"{alias}.{qi(keys[j])} = @k{j}" for j in range(i)]
        terms.append("(" + " AND ".join([*eq, f"{alias}.{qi(k)} > @k{i}"]) + ")")
    return "\n    OR ".join(terms)


def rows_for_keys(shape: LinkShape, side: str,
                  collations: Mapping[str, str] | None = None) -> Rendered:
    """Current rows for the keys in @keys (JSON array of {"c0": ..} objects)."""
    table = shape.table(side)
    keys, cols = shape.key_cols(side), shape.cols(side)
    select = ", ".join(_read_expr("t", c, table.columns[c].type) for c in cols)
    return Rendered(
        _q("rows_for_keys", select_list=select, table=qualified(table.schema, table.name),
           json_keys=_json_with(table, keys, strict=True),
           key_join=_positional_join(table, "t", "k", keys, collations)),
        ("keys",),
    )


# --- applying ----------------------------------------------------------------------------


def _json_type(spelled: str) -> str:
    """Type in the OPENJSON WITH clause: text as nvarchar(max) so an over-long value is an
    error on the INSERT below instead of a silent cut; binary as hex text (style 2)."""
    kind = types.parse_mssql(spelled).kind
    if kind == "text":
        return "nvarchar(max)"
    if kind == "bytes":
        return "varchar(max)"
    return sql_type(spelled)


def _json_with(table: Table, cols: list[str], *, strict: bool) -> str:
    """OPENJSON column list c0.. with 'strict $.cN' paths: a missing key is an error, never NULL."""
    mode = "strict " if strict else ""
    return ", ".join(
        f"c{i} {_json_type(table.columns[c].type)} '{mode}$.c{i}'" for i, c in enumerate(cols)
    )


def _positional_join(table: Table, left: str, right: str, cols: list[str],
                     collations: Mapping[str, str] | None) -> str:
    """t.[name] = k.cN [COLLATE x]: the explicit collation wins over the staging column's.
    A binary key arrives as hex text (OPENJSON has no binary input) and is converted
    back to the column's own type, style 2 (hex without 0x, §2.1): compared as text
    it would never match (issue 18 item 6)."""
    terms = []
    for i, c in enumerate(cols):
        spelled = table.columns[c].type
        if types.parse_mssql(spelled).kind == "bytes":
            terms.append(f"{left}.{qi(c)} = CONVERT({sql_type(spelled)}, {right}.c{i}, 2)")
        else:
            terms.append(f"{left}.{qi(c)} = {right}.c{i}{_collate((collations or {}).get(c))}")
    return " AND ".join(terms)


def _exact(table: Table, alias: str, name: str, col: str) -> str:
    """A column as the no-op filter compares it: text and datetimeoffset by their bytes,
    since = ignores case under _CI collations and trailing spaces always, and compares
    datetimeoffset in UTC; an update that only changes those must still be written."""
    kind = types.parse_mssql(table.columns[name].type).kind
    if kind in ("text", "timestamptz", "json"):
        return f"CAST({alias}.{col} AS varbinary(max))"
    return f"{alias}.{col}"


def _stage_column(table: Table, name: str, i: int, is_key: bool,
                  collations: Mapping[str, str] | None) -> str:
    """@src column cN: the sink's own type (keys exactly, other text/binary as (max)),
    with the sink column's collation so joins never hit a collation conflict."""
    spelled = table.columns[name].type
    t = types.parse_mssql(spelled)
    typ = sql_type(spelled)
    if not is_key and t.kind in ("text", "bytes") and not t.fixed:
        typ = typ.split("(")[0] + "(max)"
    coll = _collate((collations or {}).get(name)) if t.kind == "text" else ""
    null = " NOT NULL" if is_key else ""
    return f"c{i} {typ}{coll}{null}"


def _stage_expr(table: Table, name: str, i: int) -> str:
    if types.parse_mssql(table.columns[name].type).kind == "bytes":
        return f"CONVERT(varbinary(max), c{i}, 2)"  # hex without 0x (§2.1)
    return f"c{i}"


def apply(shape: LinkShape, side: str, *, identity_insert: bool = False,
          with_cursor: bool = False,
          collations: Mapping[str, str] | None = None,
          identity: frozenset[str] = frozenset()) -> Rendered:
    """The whole apply batch for one chunk, to run in one pyodbc transaction (§2.1).

    Parameters (APPLY_PARAMS): ctx (echo context), rows (JSON array of
    {"c0":..} in cols order), dels (JSON array of key objects), batch, link,
    source_side, signals, version and db_identity (the CT cursor of a SQL
    Server source, only stored when with_cursor; pass None otherwise).
    Returns one result set: updated, inserted, deleted.

    Order: DELETE, UPDATE, INSERT, as the Postgres sink does: a key change is a
    delete of the old key plus an insert of the new one, and the old row must be
    gone first or a UNIQUE column still holding its value fails the insert (2601).
    IDENTITY columns (`identity`) never go into the SET list: SQL Server cannot
    update them (Msg 8102); they are only written by the INSERT under IDENTITY_INSERT.
    """
    table = shape.table(side)
    keys, cols = shape.key_cols(side), shape.cols(side)
    name = qualified(table.schema, table.name)
    nk = len(keys)
    values = [(nk + j, c) for j, c in enumerate(cols[nk:]) if c not in identity]
    parts = [query(SQL_FILE, "apply_prologue")]
    parts.append(_q(
        "apply_stage",
        src_columns=", ".join(
            _stage_column(table, c, i, i < nk, collations) for i, c in enumerate(cols)),
        src_keys=", ".join(f"c{i}" for i in range(nk)),
        src_names=", ".join(f"c{i}" for i in range(len(cols))),
        stage_select=", ".join(_stage_expr(table, c, i) for i, c in enumerate(cols)),
        json_columns=_json_with(table, cols, strict=True),
    ))
    parts.append(_q(
        "apply_delete", table=name,
        json_keys=_json_with(table, keys, strict=True),
        key_join=_positional_join(table, "t", "k", keys, collations),
    ))
    join = " AND ".join(f"t.{qi(k)} = s.c{i}" for i, k in enumerate(keys))
    if values:
        parts.append(_q(
            "apply_update",
            set_list=", ".join(f"t.{qi(c)} = s.c{i}" for i, c in values),
            table=name, join=join,
            src_values=", ".join(_exact(table, "s", c, f"c{i}") for i, c in values),
            dst_values=", ".join(_exact(table, "t", c, qi(c)) for i, c in values),
        ))
    if identity_insert:
        parts.append(_q("identity_on", table=name))
    parts.append(_q(
        "apply_insert", table=name, join=join,
        target_cols=", ".join(qi(c) for c in cols),
        source_cols=", ".join(f"s.c{i}" for i in range(len(cols))),
    ))
    if identity_insert:
        parts.append(_q("identity_off", table=name))
    if with_cursor:
        parts.append(query(SQL_FILE, "apply_cursor"))
    parts.append(query(SQL_FILE, "apply_record"))
    parts.append(query(SQL_FILE, "apply_counts"))
    return Rendered("\n".join(parts), APPLY_PARAMS)


def all_statements(shape: LinkShape, side: str, db: str = "clinic") -> dict[str, Rendered]:
    """Every statement the engine can emit for one SQL Server side, by name (tests, docs)."""
    s = shape.link.side(side)
    out = {n: static(n) for n in STATIC_PARAMS}
    out.update(
        enable_db_snapshot=enable_db_snapshot(db),
        enable_db_ct=enable_db_ct(db),
        disable_db_ct=disable_db_ct(db),
        set_db_retention=set_db_retention(db, 7),
        enable_table_ct=enable_table_ct(s),
        disable_table_ct=disable_table_ct(s),
        poll_tables=poll_tables(2),
        changes=changes(shape, side),
        changes_next_page=changes(shape, side, first=False),
        keys_first_page=keys_page(shape, side, first=True),
        keys_next_page=keys_page(shape, side, first=False),
        rows_first_page=keys_page(shape, side, first=True, values=True),
        rows_next_page=keys_page(shape, side, first=False, values=True),
        rows_for_keys=rows_for_keys(shape, side),
        apply=apply(shape, side),
        apply_identity_cursor=apply(shape, side, identity_insert=True, with_cursor=True),
    )
    return out
