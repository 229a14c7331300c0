"""The T-SQL that carries rows or keys as one OPENJSON parameter (reference §2.1): the
apply batch and the read of current rows for a list of keys.

Its objects use positional keys "c0", "c1", ... in `LinkShape.cols(side)` order
(key columns first), so no column name ever appears inside a JSON path or a
string literal, whatever characters it contains. Identifiers are quoted by
sql.qi and types pass sql.sql_type, as for every T-SQL the engine renders.
"""

from __future__ import annotations

from collections.abc import Mapping

from syncbridge.engine.catalog import LinkShape, Table
from syncbridge.engine.sqlserver import types
from syncbridge.engine.sqlserver.sql import (
    SQL,
    Rendered,
    collate,
    qi,
    qualified,
    read_expr,
    render,
    sql_type,
)

APPLY_PARAMS = ("ctx", "rows", "dels", "batch", "link", "source_side", "signals", "version",
                "db_identity", "states", "resend")


def rows_for_keys(shape: LinkShape, side: str,
                  collations: Mapping[str, str] | None = None) -> Rendered:
    """Current rows for the keys in @keys (JSON array of {"c0": ..} objects)."""
    table = shape.table(side)
    keys, cols = shape.key_cols(side), shape.cols(side)
    select = ", ".join(read_expr("t", c, table.columns[c].type) for c in cols)
    return Rendered(
        render("rows_for_keys", select_list=select, table=qualified(table.schema, table.name),
           json_keys=_json_with(table, keys, strict=True),
           key_join=_positional_join(table, "t", "k", keys, collations)),
        ("keys",),
    )


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
            terms.append(f"{left}.{qi(c)} = {right}.c{i}{collate((collations or {}).get(c))}")
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
    coll = collate((collations or {}).get(name)) if t.kind == "text" else ""
    null = " NOT NULL" if is_key else ""
    return f"c{i} {typ}{coll}{null}"


def _stage_expr(table: Table, name: str, i: int) -> str:
    if types.parse_mssql(table.columns[name].type).kind == "bytes":
        return f"CONVERT(varbinary(max), c{i}, 2)"  # hex without 0x (§2.1)
    return f"c{i}"


def _apply_stage(table: Table, cols: list[str], nk: int,
                 collations: Mapping[str, str] | None) -> str:
    """The @src table variable of an apply batch, filled from @rows (OPENJSON)."""
    return render(
        "apply_stage",
        src_columns=", ".join(
            _stage_column(table, c, i, i < nk, collations) for i, c in enumerate(cols)),
        src_keys=", ".join(f"c{i}" for i in range(nk)),
        src_names=", ".join(f"c{i}" for i in range(len(cols))),
        stage_select=", ".join(_stage_expr(table, c, i) for i, c in enumerate(cols)),
        json_columns=_json_with(table, cols, strict=True),
    )


def apply(shape: LinkShape, side: str, *, identity_insert: bool = False,
          with_cursor: bool = False,
          collations: Mapping[str, str] | None = None,
          identity: frozenset[str] = frozenset(), with_state: bool = False) -> Rendered:
    """The whole apply batch for one chunk, to run in one pyodbc transaction (§2.1).

    Parameters (APPLY_PARAMS): ctx (echo context), rows (JSON array of
    {"c0":..} in cols order), dels (JSON array of key objects), batch, link,
    source_side, signals, version and db_identity (the CT cursor of a SQL
    Server source, only stored when with_cursor; pass None otherwise), states
    and resend (two-way links, written when with_state: the bases of the keys
    settled and the keys to send back; see apply_state / apply_resend).
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
    parts = [SQL["apply_prologue"], _apply_stage(table, cols, nk, collations)]
    parts.append(render(
        "apply_delete", table=name,
        json_keys=_json_with(table, keys, strict=True),
        key_join=_positional_join(table, "t", "k", keys, collations),
    ))
    join = " AND ".join(f"t.{qi(k)} = s.c{i}" for i, k in enumerate(keys))
    if values:
        parts.append(render(
            "apply_update",
            set_list=", ".join(f"t.{qi(c)} = s.c{i}" for i, c in values),
            table=name, join=join,
            src_values=", ".join(_exact(table, "s", c, f"c{i}") for i, c in values),
            dst_values=", ".join(_exact(table, "t", c, qi(c)) for i, c in values),
        ))
    if identity_insert:
        parts.append(render("identity_on", table=name))
    parts.append(render(
        "apply_insert", table=name, join=join,
        target_cols=", ".join(qi(c) for c in cols),
        source_cols=", ".join(f"s.c{i}" for i in range(len(cols))),
    ))
    if identity_insert:
        parts.append(render("identity_off", table=name))
    if with_cursor:
        parts.append(SQL["apply_cursor"])
    if with_state:
        parts += [SQL["apply_state"], SQL["apply_resend"]]
    parts.append(SQL["apply_record"])
    parts.append(SQL["apply_counts"])
    return Rendered("\n".join(parts), APPLY_PARAMS)


def state_read(shape: LinkShape, side: str,
               collations: Mapping[str, str] | None = None) -> Rendered:
    """The current rows and bases of @keys ([{"n": i, "ka": a-key text, "c0": ..}]), locked
    until the apply batch that follows in the same transaction commits (two-way sinks).
    Result columns: n, sb_present, base image, known, sb_based, then `shape.cols(side)`."""
    table = shape.table(side)
    keys, cols = shape.key_cols(side), shape.cols(side)
    return Rendered(
        render("state_read", present=qi(keys[0]),
               select_list=", ".join(read_expr("t", c, table.columns[c].type) for c in cols),
               table=qualified(table.schema, table.name),
               json_keys=_json_with(table, keys, strict=True),
               key_join=_positional_join(table, "t", "k", keys, collations)),
        ("keys", "link"),
    )

