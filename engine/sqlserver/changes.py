"""Reading a change-tracking source: one snapshot per page of CHANGETABLE, keyset pages
of keys or rows, and rows for given keys. Blocking functions that run on a
connection's own thread (connection.Conn); MssqlPeer wraps them for asyncio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from syncbridge.engine.catalog import LinkShape, Table
from syncbridge.engine.sqlserver import convert, openjson
from syncbridge.engine.sqlserver import sql as tsql
from syncbridge.engine.sqlserver.capture import TableMeta
from syncbridge.engine.sqlserver.connection import SqlServerError, first_result

CHANGE_PAGE_ROWS = 5000  # CHANGETABLE rows per snapshot read (issue 18 item 18)


@dataclass(frozen=True)
class CtCursor:
    """Where a change-tracking source was read up to, and which database that was."""

    version: int
    db_identity: str | None


class ChangeSet(NamedTuple):
    """read_changes result: one page of the changes in (cursor, new_cursor]."""

    upserts: list[dict[str, Any]]  # this side's column names -> values Postgres accepts
    deletes: list[dict[str, Any]]  # this side's key column names -> values
    new_cursor: CtCursor
    resync_needed: bool  # True: signal every key (read_keys_page), then store new_cursor
    # The last key of a full page: read the next page with after=this and
    # upto=new_cursor.version before storing new_cursor. None: this was the last page.
    next_after: dict[str, Any] | None = None
    min_valid: int | None = None



def db_identity(cur: Any) -> str | None:
    """This database's identity (sync.db_identity); as a table read it also opens the
    snapshot under the driver's implicit transactions."""
    row = cur.execute(tsql.static("db_identity").sql).fetchone()
    return row[0].lower() if row else None


def read_changes(cn: Any, peer: str, shape: LinkShape, side: str, cursor: CtCursor | None,
                 ctx: bytes, after: dict[str, Any] | None, upto: int | None,
                 limit: int) -> ChangeSet:
    """One page of changes (see MssqlPeer.read_changes), on the reader connection."""
    table = shape.table(side)
    src = shape.link.side(side)
    cur = cn.cursor()
    if upto is None:
        obj = tsql.side_name(src)
        try:
            upto = cur.execute(tsql.static("poll").sql, obj, obj).fetchone()[0]
        finally:
            cn.commit()  # no snapshot may be open while the bound is read
    try:
        # A table read first: under the driver's implicit transactions a SELECT
        # without a table (like the versions query) opens no transaction, so the
        # snapshot would not yet cover the validity check (§1.4, §7.4).
        ident = db_identity(cur)
        record = cur.execute(tsql.static("client_version_read").sql, shape.link.name,
                             side).fetchone()
        now_v, min_v = cur.execute(tsql.static("versions").sql, tsql.side_name(src)).fetchone()
        if upto is None or now_v is None or min_v is None:
            raise SqlServerError(
                f"change tracking is off for {src.qualified} on peer {peer!r}, or the "
                f"login lacks VIEW CHANGE TRACKING on it (run `syncbridge install`)"
            )
        new = CtCursor(upto, ident)
        if (cursor is None or cursor.version < min_v or cursor.version > now_v
                or (cursor.db_identity and ident and cursor.db_identity != ident)
                or record is None or record[0] < cursor.version):
            return ChangeSet([], [], new, True, None, min_v)
        keys = shape.key_cols(side)
        r = tsql.changes(shape, side, first=after is None)
        params: list[Any] = [cursor.version, ctx, upto, limit]
        if after is not None:
            params += [convert.key_param(after[k], table.columns[k].type) for k in keys]
        rows = first_result(cur.execute(r.sql, *params))
    finally:
        cn.commit()  # end the snapshot at once (§1.4: keep them short)
    cs = _split_changes(shape, side, table, rows, new)
    more = None
    if len(rows) >= limit:  # a full page: there may be more in this window
        more = {k: convert.to_postgres(v, table.columns[k].type)
                for k, v in zip(keys, rows[-1][3: 3 + len(keys)], strict=True)}
    return cs._replace(next_after=more, min_valid=min_v)


def _split_changes(shape: LinkShape, side: str, table: Table, rows: list[Any],
                   new: CtCursor) -> ChangeSet:
    cols, keys = shape.cols(side), shape.key_cols(side)
    other = shape.table("b" if side == "a" else "a")
    targets = dict(shape.pairs) if side == "a" else {b: a for a, b in shape.pairs}
    upserts, deletes = [], []
    for r in rows:
        found = r[3:]
        if r[2]:  # present: upsert its current values
            upserts.append({
                c: convert.from_mssql(v, table.columns[c].type, other.columns[targets[c]].type)
                for c, v in zip(cols, found, strict=True)
            })
        else:  # gone, whatever SYS_CHANGE_OPERATION says (§1.4)
            deletes.append({
                c: convert.from_mssql(v, table.columns[c].type)
                for c, v in zip(keys, found[: len(keys)], strict=True)
            })
    return ChangeSet(upserts, deletes, new, False)


def keys_page(cn: Any, shape: LinkShape, side: str, after: dict[str, Any] | None,
              limit: int, with_values: bool) -> list[dict[str, Any]]:
    """Keys (or whole rows) after `after` in key order, committed at once."""
    table = shape.table(side)
    keys = shape.key_cols(side)
    cols = shape.cols(side) if with_values else keys
    r = tsql.keys_page(shape, side, first=after is None, values=with_values)
    params: list[Any] = [limit]
    if after is not None:
        params += [convert.key_param(after[k], table.columns[k].type) for k in keys]
    try:
        rows = first_result(cn.cursor().execute(r.sql, *params))
    finally:
        cn.commit()
    return _named(table, cols, rows)


def read_rows(cn: Any, shape: LinkShape, side: str, meta: TableMeta,
              keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Current rows of `side` for these keys, committed at once; absent keys omitted."""
    table = shape.table(side)
    cols, kcols = shape.cols(side), shape.key_cols(side)
    payload = convert.json_text([{f"c{i}": convert.to_transport(k[c], table.columns[c].type)
                                 for i, c in enumerate(kcols)} for k in keys])
    try:
        rows = first_result(cn.cursor().execute(
            openjson.rows_for_keys(shape, side, meta.collations).sql, payload))
    finally:
        cn.commit()
    return _named(table, cols, rows)


def _named(table: Table, cols: list[str], rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {c: convert.from_mssql(v, table.columns[c].type) for c, v in zip(cols, row, strict=True)}
        for row in rows
    ]


class SinkState(NamedTuple):
    """A two-way SQL Server sink's side of one key, read under lock before the apply."""

    row: dict[str, Any] | None  # the current row (this side's names, to_postgres values)
    base: str | None  # the base image text (a-named Postgres texts); None = absent / none
    known: bool  # False: the base is unknown (install found the sides differing)
    based: bool  # a base entry exists for the key


def read_state(cn: Any, shape: LinkShape, side: str, meta: TableMeta,
               keys: Sequence[tuple[str, dict[str, Any]]], link: str) -> list[SinkState]:
    """Current rows and bases of (a-key text, key values) pairs, in order, WITHOUT commit:
    the locks it takes hold until the apply batch that follows commits."""
    table = shape.table(side)
    cols, kcols = shape.cols(side), shape.key_cols(side)
    payload = convert.json_text([
        {"n": n, "ka": ka, **{f"c{i}": convert.to_transport(k[c], table.columns[c].type)
                              for i, c in enumerate(kcols)}}
        for n, (ka, k) in enumerate(keys)])
    rows = first_result(cn.cursor().execute(
        openjson.state_read(shape, side, meta.collations).sql, payload, link))
    found: list[SinkState] = []
    for r in rows:
        row = _named(table, cols, [r[5:]])[0] if r[1] else None
        found.append(SinkState(row, r[2], bool(r[3]) if r[4] else True, bool(r[4])))
    return found


class TwoWayBatch(NamedTuple):
    """What one batch writes at a SQL Server sink: rows, gone keys and, for a two-way
    link, the bases of the keys it settled and the keys whose row goes back."""

    upserts: Sequence[dict[str, Any]]
    deletes: Sequence[dict[str, Any]]
    states: Sequence[tuple[str, str | None]] = ()  # (a-key text, image text or None)
    resend: Sequence[str] = ()  # key texts in this side's names
