"""The drains of links with a SQL Server side: change tracking in, OPENJSON batches out.

Same pipeline and guarantees as `drain.PgDrain`, adapted to what each side records:

SQL Server source -> Postgres sink (`CtToPgDrain`). There is no queue: the
source is change tracking, and its cursor (version + database identity) lives
in the Postgres sink's `sync.ct_cursor`, written in the same transaction as the
(last chunk of) rows read up to it, together with the `sync.applied_batches`
record. A crash before that commit re-reads the same changes and applies them
again (current rows: harmless); after it, the cursor says they are done. Each
tick first compares `CHANGE_TRACKING_CURRENT_VERSION()` with the stored cursor
(one cheap query) and only then reads `CHANGETABLE`. A cursor that
is missing, too old (retention, TRUNCATE), ahead of the database or from another
database identity (restore) makes the link resync: every source row is sent
again in keyset pages, then (except on a first run) sink rows whose key the
source no longer has are deleted, then the new cursor is stored. Never skipped.

Postgres source -> SQL Server sink (`PgToCtDrain`). Claim signals in the
Postgres `sync.queue` exactly as PgDrain does, read the current source rows as
typed values (asyncpg's Decimal, datetime, bytes ... never through a float), and
apply them with `MssqlPeer.apply_batch`: one SQL Server transaction holding the
rows and the `[sync].[applied_batches]` record, tagged WITH
CHANGE_TRACKING_CONTEXT so this link's change-tracking reader skips them. Then
delete the claimed signals. Recovery asks SQL Server whether a claimed batch id
is recorded: yes = only the source cleanup is left, no = apply it now.

Rows the sink rejects are isolated by bisection (`drain.isolate`) and parked in
the hub's `sync.dead_letter`. A SQL Server batch cannot be partly undone, so
when a batch hits a row error its halves are applied as sub-batches (fresh
ids, each its own transaction) and the claimed batch's own record is written
last, after its problems were parked; re-applying current rows after a crash in
between is harmless. Foreign-key misses are retried before they are dead:
re-queued with backoff at a Postgres source, re-read from the dead letters
(`ct_retry_keys`) at a change-tracking source.

Two-way links with a SQL Server side have NO conflict check (no sync.row_state
comparison): each direction applies the current row, so when both sides change
one key between two drains, the direction drained last wins and both sides
converge on that row. The bridge logs a warning at start for such links, and
`conflict = "manual"` is refused by the config (docs/sqlserver.md).
SQL Server <-> SQL Server links are not supported yet (`make_drain` refuses).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from syncbridge.engine import errors, faults, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError
from syncbridge.engine.postgres import capture
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.postgres.drain import (
    Item,
    Outcome,
    Q,
    QueueDrain,
    _array,
    apply_set,
    isolate,
    problem,
)
from syncbridge.engine.sqlserver import types as mssql_types
from syncbridge.engine.sqlserver.peer import (
    BadRow,
    CtCursor,
    MssqlPeer,
    Timeouts,
    Unsendable,
    echo_context,
    native_errors,
)

log = logging.getLogger("syncbridge.mssql_drain")

PAGE_ROWS = 1000  # rows per keyset page of a resync or a truncate sweep
RETRY_KEYS = 500  # dead-lettered keys of a change-tracking source re-read per tick
DEFER_BASE = 1.0  # seconds; first delay of a re-queued foreign-key miss (doubles, max 60)
# SQL Server errors that belong to one row's data (the rest of the batch can still go):
# 515 NULL into NOT NULL, 547 FK/CHECK, 2601/2627 duplicate key, 2628/8152 string
# truncation, 8114/8115 conversion/overflow, 220/232 arithmetic overflow, 241/242/
# 517 date conversion/range, 245/8169 conversion (e.g. uniqueidentifier).
MSSQL_ROW_ERRORS = frozenset({515, 547, 2601, 2627, 2628, 8152, 8114, 8115, 220, 232,
                              241, 242, 517, 245, 8169})
MSSQL_FK = 547  # "conflicted with the FOREIGN KEY constraint" (child first) and "... with the
# REFERENCE constraint" (parent delete blocked by children); also CHECK, which is never deferred
CURSOR_IDLE_STORE = 60.0  # seconds; an empty window moves the stored cursor at most this often
APPLIED_KEEP_DAYS = 7  # [sync].[applied_batches] records kept (recovery needs minutes)
PRUNE_EVERY = 3600.0  # seconds between prunes of [sync].[applied_batches]


def M(name: str) -> str:  # noqa: N802 - reads like a table of named statements
    return sqlfiles.query("queries/mssql_bridge.sql", name)


# --- values -> Postgres jsonb text -----------------------------------------------------------


def pg_value(value: Any, pg_type: str) -> str:
    """One Python value (as mssql_types.to_postgres returns it) -> JSON text that
    jsonb_populate_recordset turns into exactly that value of a `pg_type` column.

    Decimal and int as raw JSON numbers (jsonb numbers are numeric: no float in
    between), datetimes ISO 8601 with microseconds (and the offset when aware),
    bytes as "\\x<hex>" (bytea's hex input), json as a string holding its text. Raises ValueError
    for a value Postgres cannot take (the row is dead-lettered, not the batch).
    """
    if value is None:
        return "null"
    if isinstance(value, Unsendable):
        raise ValueError(value.reason)
    if mssql_types.parse_pg(pg_type).kind == "json":
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        json.loads(text)  # not JSON -> ValueError (JSONDecodeError is one)
        if "\\u0000" in text:
            raise ValueError("Postgres jsonb cannot hold the NUL character (\\u0000)")
        # as a JSON string: the sink casts json columns from their text (pg_sql), so
        # JSON null arrives as the JSON value null, not as SQL NULL
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return json.dumps(str(value))  # 'NaN' is numeric text input, never a JSON number
        return format(value, "f")
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    if isinstance(value, dt.datetime | dt.time):
        return json.dumps(value.isoformat(timespec="microseconds"))
    if isinstance(value, dt.date):
        return json.dumps(value.isoformat())
    if isinstance(value, bytes | bytearray | memoryview):
        return json.dumps("\\x" + bytes(value).hex())
    if isinstance(value, uuid.UUID):
        return json.dumps(str(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("Postgres text cannot hold the NUL character (\\x00)")
        return json.dumps(value, ensure_ascii=False)
    raise ValueError(f"cannot send a {type(value).__name__} to Postgres {pg_type}")


def pg_object(names: Sequence[str], values: Sequence[Any], pg_types: Sequence[str]) -> str:
    """A JSON object text {name: value} built with pg_value."""
    return "{" + ",".join(
        f"{json.dumps(n, ensure_ascii=False)}:{pg_value(v, t)}"
        for n, v, t in zip(names, values, pg_types, strict=True)
    ) + "}"


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def _norm(text: str) -> str:
    """A JSON key text in one canonical spelling (jsonb::text adds spaces)."""
    return json.dumps(_loads(text), sort_keys=True, separators=(",", ":"), default=str)


def _for_mssql(value: Any, mssql_type: str) -> Any:
    """A key value parsed from Postgres JSON -> what MssqlPeer.read_rows can bind."""
    if isinstance(value, str) and mssql_types.parse_mssql(mssql_type).kind == "bytes" \
            and value.startswith("\\x"):
        return bytes.fromhex(value[2:])
    return value


def _mssql_row_error(exc: BaseException) -> bool:
    """True when SQL Server rejected the batch because of one row's data."""
    if isinstance(exc, BadRow | ValueError):
        return True
    if not errors.is_odbc_error(exc) or errors.is_transient(exc):
        return False
    args = getattr(exc, "args", ())
    state = str(args[0]) if args else ""
    return state[:2] in ("22", "23") or any(n in MSSQL_ROW_ERRORS for n in native_errors(exc))


def _mssql_fk(exc: BaseException) -> bool:
    """A foreign-key miss worth deferring, like 23503 on Postgres: Msg 547 in either form
    (FOREIGN KEY: the parent is not there yet; REFERENCE: children still point at a
    deleted parent, whose delete usually arrives next), never a CHECK constraint."""
    if MSSQL_FK not in native_errors(exc):
        return False
    text = " ".join(str(a) for a in getattr(exc, "args", ())).upper()
    return "FOREIGN KEY" in text or "REFERENCE CONSTRAINT" in text


def _other(side: str) -> str:
    return "b" if side == "a" else "a"


# --- SQL Server source -> Postgres sink ------------------------------------------------------


@dataclass(frozen=True)
class _SweepSql:
    first: str  # $1 limit -> key (jsonb text, sink names), in key order
    next: str  # $1 limit, $2 jsonb key to start after
    delete: str  # $1 jsonb keys of a page, $2 jsonb keys the source has, $3 link, $4 sink side


def _sweep_sql(shape: LinkShape, sink: str) -> _SweepSql:
    """Sink keys page by page (keyset, never OFFSET) and the delete of the ones the
    source lacks, sparing keys with a signal queued at the sink (a fresh local write
    of a two-way link that has not reached the source yet)."""
    keys = shape.key_cols(sink)
    q = pg_sql._q
    table = pg_sql._table(shape, sink)
    key_obj = pg_sql._obj(keys, "t", keys)
    order = ", ".join(f"t.{q(k)}" for k in keys)
    tup = ", ".join(f"t.{q(k)}" for k in keys)
    after = ", ".join(f"a.{q(k)}" for k in keys)
    first = f"select {key_obj}::text as key from {table} t order by {order} limit $1"
    nxt = (f"select {key_obj}::text as key from {table} t, "
           f"jsonb_populate_record(null::{table}, $2::jsonb) a "
           f"where ({tup}) > ({after}) order by {order} limit $1")
    defs = pg_sql._coldefs(shape, sink)
    delete = (
        f"delete from {table} t using jsonb_to_recordset($1::jsonb) as k({defs}) "
        f"where {' and '.join(f't.{q(k)} = k.{q(k)}' for k in keys)} "
        f"and not exists (select 1 from jsonb_to_recordset($2::jsonb) as p({defs}) "
        f"where {' and '.join(f'p.{q(k)} = t.{q(k)}' for k in keys)}) "
        f"and not exists (select 1 from sync.queue sq where sq.link = $3 and sq.side = $4 "
        f"and sq.key = {key_obj})"
    )
    return _SweepSql(first, nxt, delete)


class CtToPgDrain:
    """Moves one link's changes from a SQL Server (change tracking) side to a Postgres side."""

    def __init__(self, shape: LinkShape, source_side: str, mssql: MssqlPeer,
                 sink: asyncpg.Pool, hub: asyncpg.Pool, max_attempts: int = 8,
                 poll_interval: float = 0.25, page_rows: int = PAGE_ROWS,
                 retention_days: float = 7.0) -> None:
        self.shape = shape
        self.link = shape.link
        self.src = source_side
        self.dst = _other(source_side)
        self.mssql, self.sink, self.hub = mssql, sink, hub
        self.sql = pg_sql.render(shape, self.src, self.dst)
        self.sweep_sql = _sweep_sql(shape, self.dst)
        self.origin = capture.origin_tag(self.link, self.src)
        self.ctx = echo_context(self.link.name)
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.page_rows = page_rows
        self.open_dead_letters = True  # refreshed by the stats task; True = check
        self._src_keys, self._dst_keys = shape.key_cols(self.src), shape.key_cols(self.dst)
        self._src_cols, self._dst_cols = shape.cols(self.src), shape.cols(self.dst)
        dst_table = shape.table(self.dst)
        self._dst_types = [dst_table.columns[c].type for c in self._dst_cols]
        self._dst_key_types = self._dst_types[: len(self._dst_keys)]
        self._meta = False
        self._gap = 0  # CT versions the database is ahead of the cursor (sync.status queued)
        self._behind_since: dt.datetime | None = None  # sync.status lag
        self.retention_days = retention_days
        # Version up to which this table is known to have nothing new, beyond the stored
        # cursor: writes elsewhere in the database move the version without a sink write.
        self._seen: int | None = None
        self._stored_at = 0.0  # time.monotonic() of the last cursor store
        self._cursor_at: dt.datetime | None = None  # sink's updated_at of the stored cursor
        self._warned_at = -3600.0
        self._altered: Any = None  # modify_date of the source table at the first poll

    @property
    def name(self) -> str:
        return f"{self.link.name}:{self.src}->{self.dst}"

    async def _load_meta(self) -> None:
        """Readiness of the source (SqlServerError with the fix otherwise) and its
        collations, used by read_rows to match keys exactly."""
        if not self._meta:
            for f in await self.mssql.ensure_ready(self.link.side(self.src), source=True,
                                                   sink=self.link.direction == "both",
                                                   retention_days=self.retention_days):
                log.warning("event=sqlserver_warning link=%s detail=%s fix=%s", self.name,
                            json.dumps(f.what), json.dumps(f.fix))
            self._meta = True

    async def recover(self) -> int:
        """Nothing is ever claimed at a change-tracking source: the cursor is the record."""
        await self._load_meta()
        return 0

    async def depth(self) -> tuple[int, dt.datetime | None]:
        """(CT versions not read yet, since when): database-wide transactions, not rows."""
        return self._gap, self._behind_since

    def _observe(self, version: int | None, cursor: CtCursor | None) -> None:
        if version is None:
            return
        self._gap = version - cursor.version if cursor else 1
        if self._gap <= 0:
            self._gap, self._behind_since = 0, None
        elif self._behind_since is None:
            self._behind_since = dt.datetime.now(dt.UTC)

    async def _cursor(self) -> CtCursor | None:
        row = await self.sink.fetchrow(M("ct_cursor_read"), self.link.name, self.src)
        self._cursor_at = row["updated_at"] if row else None
        return CtCursor(row["version"], row["db_identity"]) if row else None

    async def drain_once(self) -> int:
        """One tick: retried keys, then a version check, then the changes since the cursor,
        page by page within one version window (the cursor is stored with the last page)."""
        await self._load_meta()
        n = await self._retry_dead()
        cursor = await self._cursor()
        version, min_valid, altered = await self.mssql.poll_version(self.link.side(self.src))
        await self._check_schema(altered)
        seen = max(cursor.version, self._seen or 0) if cursor is not None else None
        self._observe(version, CtCursor(seen, None) if seen is not None else None)
        if seen is not None and version is not None and version > seen:
            self._warn_retention()
        if (seen is not None and version is not None and version <= seen
                and min_valid is not None and min_valid <= cursor.version):
            return n  # idle; a TRUNCATE (min valid above the cursor) is never idle
        # the poll's version is the window's bound: it was read before any snapshot opened
        cs = await self.mssql.read_changes(self.shape, self.src, cursor, self.ctx, upto=version)
        count = 0
        while True:
            if cs.resync_needed:
                self._seen = None
                return n + count + await self.resync(cursor, cs.new_cursor)
            count += len(cs.upserts) + len(cs.deletes)
            if cs.next_after is None:
                break
            await self._apply_chunked(cs.upserts, cs.deletes, None)
            cs = await self.mssql.read_changes(self.shape, self.src, cursor, self.ctx,
                                               after=cs.next_after,
                                               upto=cs.new_cursor.version)
        if (count == 0 and cursor is not None and not cs.upserts and not cs.deletes
                and time.monotonic() - self._stored_at < CURSOR_IDLE_STORE):
            # Nothing for this table (writes elsewhere in the database, or only this
            # link's own): remember it, store the cursor later (issue 18 item 19).
            self._seen = cs.new_cursor.version
        else:
            await self._apply_chunked(cs.upserts, cs.deletes, cs.new_cursor)
            self._seen = None
        self._observe(version, cs.new_cursor)
        return n + count

    async def _check_schema(self, altered: Any) -> None:
        """Runtime schema changes (issue 18 item 22): when the source table's modify_date
        moves (ALTER TABLE, also index or CT changes), read its catalog again; if a linked
        column's type, nullability or the key changed, stop with a clear error instead of
        reading rows the validated shape no longer describes. A restart validates anew."""
        if altered is None or altered == self._altered:
            return
        if self._altered is None:
            self._altered = altered
            return
        side = self.link.side(self.src)
        now = await self.mssql.read_table(side)
        before = self.shape.table(self.src)
        cols = self._src_cols
        if now is None or now.pk != before.pk or any(
                c not in now.columns or now.columns[c] != before.columns[c] for c in cols):
            raise ConfigError(
                f"link {self.link.name!r}: {side.qualified} on peer {side.peer!r} was altered "
                "while the bridge ran (a linked column or the key changed); restart the "
                "bridge so the link is validated against the new definition")
        log.info("event=schema_rechecked link=%s table=%s", self.name, side.qualified)
        self._altered = altered

    def _warn_retention(self) -> None:
        """Unread changes behind a cursor stored more than half the retention ago are a
        resync waiting to happen (e.g. after a long outage): say so while there is time
        (issue 18 item 21). At most once an hour."""
        if self._cursor_at is None or not self.retention_days:
            return
        lag = (dt.datetime.now(dt.UTC) - self._cursor_at).total_seconds() / 86400
        now = time.monotonic()
        if lag > 0.5 * self.retention_days and now - self._warned_at > 3600:
            self._warned_at = now
            log.warning("event=ct_lag_near_retention link=%s lag_days=%.2f retention_days=%g "
                        "detail=\"past the retention the link must resync\"", self.name, lag,
                        self.retention_days)

    async def _apply_chunked(self, upserts: Sequence[dict[str, Any]],
                             deletes: Sequence[dict[str, Any]], cursor: CtCursor) -> None:
        """Changes in transactions of at most batch_size rows, deletes first (a changed key
        frees unique values); only the last one stores the cursor, so a crash in between
        reads the same changes again and re-applies them, which is harmless."""
        size = max(1, self.link.batch_size)
        parts: list[tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]]] = [
            ([], deletes[i: i + size]) for i in range(0, len(deletes), size)]
        parts += [(upserts[i: i + size], []) for i in range(0, len(upserts), size)]
        parts = parts or [([], [])]
        for i, (ups, dels) in enumerate(parts):
            await self._apply(ups, dels, cursor if i == len(parts) - 1 else None)

    # one sink transaction

    def _items(self, upserts: Sequence[dict[str, Any]], deletes: Sequence[dict[str, Any]],
               out: Outcome) -> tuple[list[Item], list[Item]]:
        """Rows/keys in source names and Python values -> Items of jsonb text in sink names;
        a value Postgres cannot hold becomes a problem of that row only."""
        ups: list[Item] = []
        dels: list[Item] = []
        for row, is_delete in [(r, False) for r in upserts] + [(d, True) for d in deletes]:
            kv = [row[k] for k in self._src_keys]
            try:
                skey = pg_object(self._src_keys, kv, self._dst_key_types)
            except ValueError:
                skey = json.dumps({k: str(v) for k, v in zip(self._src_keys, kv, strict=True)})
            try:
                sink_key = pg_object(self._dst_keys, kv, self._dst_key_types)
                payload = sink_key if is_delete else pg_object(
                    self._dst_cols, [row[c] for c in self._src_cols], self._dst_types)
            except ValueError as e:
                out.problems.append(self._problem(skey, e))
                continue
            ka = skey if self.src == "a" else sink_key
            (dels if is_delete else ups).append(Item(skey, sink_key, ka, payload, None))
        return ups, dels

    def _problem(self, source_key: str, exc: BaseException) -> str:
        # No queue to defer into at a change-tracking source: the row is parked at
        # once, and a foreign-key miss ([23503]) is re-read by _retry_dead later.
        return problem(self.name, source_key, exc, defer=False)

    async def _apply(self, upserts: Sequence[dict[str, Any]], deletes: Sequence[dict[str, Any]],
                     cursor: CtCursor | None, *, signals: int | None = None,
                     close: Sequence[str] = ()) -> Outcome:
        """Deletes, upserts, the batch record and (if given) the new cursor: one transaction."""
        out = Outcome()
        ups, dels = self._items(upserts, deletes, out)
        batch_id = uuid.uuid4()
        if cursor is not None:
            # the source's restore record first (issue 18 item 13): ahead of the sink's
            # cursor after a crash here is harmless, behind it only after a restore
            await self.mssql.record_client_version(self.link.name, self.src, cursor.version)
            self._stored_at = time.monotonic()
        async with self.sink.acquire() as conn, conn.transaction():
            await conn.execute(Q("set_origin"), self.origin)
            # deletes first: a changed key frees unique values before the new row arrives
            out.deletes = await apply_set(conn, self.sql.delete, dels, out,
                                          lambda i, e: self._problem(i.source_key, e))
            out.upserts = await apply_set(conn, self.sql.upsert, ups, out,
                                          lambda i, e: self._problem(i.source_key, e))
            record = out.record()
            if upserts or deletes or signals:  # for a bare cursor move the cursor is the record
                await conn.execute(
                    Q("record_batch"), batch_id, self.link.name, self.src,
                    len(upserts) + len(deletes) if signals is None else signals,
                    out.upserts, out.deletes, record["dead"], "[]", "[]", False,
                )
            if cursor is not None:
                await conn.execute(M("ct_cursor_write"), self.link.name, self.src,
                                   cursor.version, cursor.db_identity)
            if out.problems:
                # In this transaction when the sink is the hub; else before its commit, so a
                # crash can only repeat the entry (the rows are read again), never lose it.
                target = conn if self.hub is self.sink else self.hub
                await target.execute(Q("dead_letter"), self.link.name, self.src, record["dead"])
        faults.hit("after_sink_commit")
        if out.upserts + out.deletes or upserts or deletes:
            await self.hub.execute(Q("report_batch"), self.link.name, self.src,
                                   out.upserts + out.deletes)
        done = [i.source_key for i in out.applied]
        if done and (self.open_dead_letters or close):
            await self.hub.execute(Q("close_dead_letters"), self.link.name, self.src, done)
        return out

    # dead letters of this source, read again

    async def _retry_dead(self) -> int:
        """Keys parked earlier that sync.retry_dead() released, or foreign-key misses
        within max_attempts: read their current rows again and apply (or delete) them."""
        rows = await self.hub.fetch(M("ct_retry_keys"), self.link.name, self.src,
                                    self.max_attempts, RETRY_KEYS)
        if not rows:
            return 0
        texts = [r["key"] for r in rows]
        parsed = [_loads(t) for t in texts]
        src_table = self.shape.table(self.src)
        keys = [{k: _for_mssql(p.get(k), src_table.columns[k].type) for k in self._src_keys}
                for p in parsed]
        present = await self.mssql.read_rows(self.shape, self.src, keys)
        have = {_norm(pg_object(self._src_keys, [r[k] for k in self._src_keys],
                                self._dst_key_types)) for r in present}
        gone = [p for t, p in zip(texts, parsed, strict=True) if _norm(t) not in have]
        await self.hub.execute(M("ct_retry_taken"), self.link.name, self.src, texts)
        log.info("event=dead_letters_retried link=%s keys=%d", self.name, len(texts))
        await self._apply(present, gone, None, close=texts)
        return len(texts)

    # resync

    def _resync_reason(self, cursor: CtCursor | None, new: CtCursor) -> str:
        if cursor is None:
            return "no stored cursor (first run of this link)"
        if cursor.db_identity and new.db_identity and cursor.db_identity != new.db_identity:
            return "source database identity changed (restored?)"
        if cursor.version > new.version:
            return "stored cursor is ahead of the source database (restored?)"
        return ("stored cursor is older than CHANGE_TRACKING_MIN_VALID_VERSION "
                "(outage longer than the retention, or TRUNCATE)")

    async def resync(self, cursor: CtCursor | None, new: CtCursor) -> int:
        """Send every source row (keyset pages), delete sink rows the source lacks
        (not on a first run: the sink may hold rows of its own), then store `new`."""
        reason = self._resync_reason(cursor, new)
        log.warning("event=resync link=%s reason=%s version=%d", self.name, reason, new.version)
        await self.hub.execute(M("report_note"), self.link.name, self.src,
                               f"resync started: {reason}")
        sent = 0
        after: dict[str, Any] | None = None
        while True:
            page = await self.mssql.read_keys_page(self.shape, self.src, after,
                                                   self.page_rows, values=True)
            if not page:
                break
            await self._apply(page, [], None)
            sent += len(page)
            after = {k: page[-1][k] for k in self._src_keys}
            if len(page) < self.page_rows:
                break
        deleted = await self._sweep() if cursor is not None else 0
        await self._apply([], [], new, signals=0)
        self._observe(new.version, new)
        log.info("event=resync_done link=%s rows=%d deleted=%d version=%d", self.name, sent,
                 deleted, new.version)
        await self.hub.execute(
            M("report_note"), self.link.name, self.src,
            f"resync done at version {new.version}: {sent} rows sent, {deleted} deleted "
            f"({reason})")
        return max(sent + deleted, 1)

    async def _sweep(self) -> int:
        """Delete sink rows whose key is gone at the source, one keyset page at a time."""
        src_table = self.shape.table(self.src)
        deleted = 0
        after: str | None = None
        while True:
            if after is None:
                rows = await self.sink.fetch(self.sweep_sql.first, self.page_rows)
            else:
                rows = await self.sink.fetch(self.sweep_sql.next, self.page_rows, after)
            if not rows:
                return deleted
            texts = [r["key"] for r in rows]
            keys = []
            for t in texts:
                p = _loads(t)
                keys.append({s: _for_mssql(p[d], src_table.columns[s].type)
                             for s, d in zip(self._src_keys, self._dst_keys, strict=True)})
            present = await self.mssql.read_rows(self.shape, self.src, keys)
            have = _array([pg_object(self._dst_keys, [r[k] for k in self._src_keys],
                                     self._dst_key_types) for r in present])
            async with self.sink.acquire() as conn, conn.transaction():
                await conn.execute(Q("set_origin"), self.origin)
                status = await conn.execute(self.sweep_sql.delete, _array(texts), have,
                                            self.link.name, self.dst)
            deleted += int(status.split()[-1])
            after = texts[-1]
            if len(rows) < self.page_rows:
                return deleted


# --- Postgres source -> SQL Server sink ------------------------------------------------------


@dataclass
class _Change:
    """One row to upsert (or key to delete) at the SQL Server sink, in sink names."""

    source_key: str  # jsonb text, source names (as queued)
    values: dict[str, Any]  # sink column -> asyncpg value (keys only for a delete)
    delete: bool
    attempts: int = 0


def _typed_read(shape: LinkShape, source: str) -> str:
    """$1 jsonb keys (source names) -> skey text, present, the key columns, every linked
    column: typed, so numeric, timestamps and bytea reach Python exactly (asyncpg)."""
    keys, cols = shape.key_cols(source), shape.cols(source)
    q = pg_sql._q
    join = " and ".join(f"t.{q(k)} = k.{q(k)}" for k in keys)
    select = [f"{pg_sql._obj(keys, 'k', keys)}::text as skey",
              f"t.{q(keys[0])} is not null as present"]
    select += [f"k.{q(k)} as k{i}" for i, k in enumerate(keys)]
    select += [f"t.{q(c)} as c{i}" for i, c in enumerate(cols)]
    return (f"select {', '.join(select)} from jsonb_to_recordset($1::jsonb) "
            f"as k({pg_sql._coldefs(shape, source)}) "
            f"left join {pg_sql._table(shape, source)} t on {join}")


class PgToCtDrain(QueueDrain):
    """Moves one link's changes from a Postgres side (sync.queue) to a SQL Server side."""

    def __init__(self, shape: LinkShape, source_side: str, source: asyncpg.Pool,
                 mssql: MssqlPeer, hub: asyncpg.Pool, max_attempts: int = 8,
                 page_rows: int = PAGE_ROWS) -> None:
        self.shape = shape
        self.link = shape.link
        self.src = source_side
        self.dst = _other(source_side)
        self.source, self.mssql, self.hub = source, mssql, hub
        self.read_sql = _typed_read(shape, self.src)
        self.ctx = echo_context(self.link.name)
        self.max_attempts = max_attempts
        self.page_rows = page_rows
        self.open_dead_letters = True
        self._src_keys, self._dst_keys = shape.key_cols(self.src), shape.key_cols(self.dst)
        self._dst_cols = shape.cols(self.dst)
        src_table, dst_table = shape.table(self.src), shape.table(self.dst)
        self._src_key_types = [src_table.columns[k].type for k in self._src_keys]
        self._dst_types = {c: dst_table.columns[c].type for c in self._dst_cols}
        self._meta = False
        self._inflight: uuid.UUID | None = None
        self._pruned_at: float | None = None

    async def _load_meta(self) -> None:
        """Readiness of the sink (SqlServerError with the fix otherwise), then collations
        and IDENTITY columns of the sink table, which apply_batch needs."""
        if not self._meta:
            for f in await self.mssql.ensure_ready(self.link.side(self.dst),
                                                   source=self.link.direction == "both",
                                                   sink=True, retention_days=0):
                log.warning("event=sqlserver_warning link=%s detail=%s fix=%s", self.name,
                            json.dumps(f.what), json.dumps(f.fix))
            self._meta = True
        now = time.monotonic()
        if self._pruned_at is None or now - self._pruned_at > PRUNE_EVERY:
            self._pruned_at = now
            await self.mssql.prune_applied(APPLIED_KEEP_DAYS)

    async def recover(self) -> int:
        await self._load_meta()
        return await super().recover()

    async def _resume(self, batch_id: uuid.UUID) -> None:
        if await self.mssql.applied(batch_id):
            # recorded with its rows before the crash: only the source cleanup is left
            await self._finish(batch_id, Outcome(), count=False)
            return
        signals = await self.source.fetch(Q("batch_signals"), batch_id)
        if signals:
            await self._apply_and_finish(batch_id, signals)

    async def drain_once(self) -> int:
        """Apply one batch; returns the number of signals it consumed (0 = idle)."""
        await self._load_meta()
        if self._inflight is not None:  # an earlier try stopped midway (e.g. connection lost)
            await self._resume(self._inflight)
            self._inflight = None
        batch_id = uuid.uuid4()
        signals = await self.source.fetch(
            Q("claim"), self.link.name, self.src, self.link.batch_size, batch_id
        )
        if signals:
            self._inflight = batch_id
            faults.hit("after_claim")
            await self._apply_and_finish(batch_id, signals)
            self._inflight = None
        return len(signals)

    async def _read(self, signals: Sequence[Any]) -> list[_Change]:
        """Current source rows for the batch's distinct keys, typed, in sink names."""
        attempts: dict[str, int] = {}
        for s in signals:
            if s["op"] in ("K", "R"):
                attempts[s["key"]] = max(attempts.get(s["key"], 0), s["attempts"])
        if not attempts:
            return []
        rows = await self.source.fetch(self.read_sql, _array(list(attempts)))
        nk = len(self._src_keys)
        out = []
        for r in rows:
            tries = attempts.get(r["skey"], max(attempts.values()))
            if r["present"]:
                values = dict(zip(self._dst_cols, list(r.values())[2 + nk:], strict=True))
                out.append(_Change(r["skey"], values, False, tries))
            else:
                keys = dict(zip(self._dst_keys, list(r.values())[2: 2 + nk], strict=True))
                out.append(_Change(r["skey"], keys, True, tries))
        return out

    def _check(self, ch: _Change) -> None:
        """Raise ValueError now for a value SQL Server cannot take (as apply_batch would)."""
        for c, v in ch.values.items():
            mssql_types.to_transport(v, self._dst_types[c])

    def _problem(self, ch: _Change, exc: BaseException) -> str:
        defer = _mssql_fk(exc) and ch.attempts < self.max_attempts
        entry = problem(self.name, ch.source_key, exc, defer)
        return entry[:-1] + f',"attempts":{ch.attempts}}}'

    async def _send(self, batch_id: uuid.UUID, changes: Sequence[_Change], signals: int) -> int:
        counts = await self.mssql.apply_batch(
            self.shape, self.dst, batch_id, [c.values for c in changes if not c.delete],
            [c.values for c in changes if c.delete], self.ctx, signals=signals)
        return counts.updated + counts.inserted + counts.deleted

    async def _park(self, problems: list[str]) -> None:
        """Dead letters to the hub, foreign-key misses back to the source queue (later).
        Always before the batch's own record: a crash can repeat this, never lose it."""
        entries = _array(problems)
        await self.hub.execute(Q("dead_letter"), self.link.name, self.src, entries)
        await self.source.execute(M("requeue_keys"), self.link.name, self.src, entries,
                                  DEFER_BASE)

    async def _apply_and_finish(self, batch_id: uuid.UUID, signals: Sequence[Any]) -> None:
        if any(s["op"] == "T" for s in signals):
            await self._sweep_sink()
        changes = await self._read(signals)
        out = Outcome()
        sendable = []
        for ch in changes:
            try:
                self._check(ch)
            except ValueError as e:
                out.problems.append(self._problem(ch, e))
            else:
                sendable.append(ch)
        if out.problems:
            await self._park(out.problems)
        try:
            await self._send(batch_id, sendable, len(signals))
            applied = sendable
        except Exception as e:
            if not sendable or not _mssql_row_error(e):
                raise
            # a row the sink rejects: apply the halves as sub-batches, record the batch last
            found: list[str] = []
            applied = []
            if len(sendable) == 1:
                found.append(self._problem(sendable[0], e))
            else:
                mid = len(sendable) // 2
                for half in (sendable[:mid], sendable[mid:]):
                    _, ok = await isolate(
                        half, lambda part: self._send(uuid.uuid4(), part, 0), _mssql_row_error,
                        lambda ch, err: found.append(self._problem(ch, err)))
                    applied += ok
            if found:
                await self._park(found)
                out.problems += found
            await self._send(batch_id, [], len(signals))
        out.upserts = sum(1 for c in applied if not c.delete)
        out.deletes = sum(1 for c in applied if c.delete)
        faults.hit("after_sink_commit")
        await self._finish(batch_id, out, applied=[c.source_key for c in applied])

    async def _finish(self, batch_id: uuid.UUID, out: Outcome, count: bool = True,
                      applied: Sequence[str] = ()) -> None:
        await self.source.execute(Q("finish_batch"), batch_id)
        if count:
            await self.hub.execute(Q("report_batch"), self.link.name, self.src,
                                   out.upserts + out.deletes)
        if self.open_dead_letters and applied:
            await self.hub.execute(Q("close_dead_letters"), self.link.name, self.src,
                                   list(applied))

    async def _sweep_sink(self) -> int:
        """TRUNCATE at the source: delete every sink key the source no longer has
        (keyset pages of the sink's keys, each checked against the source)."""
        deleted = 0
        after: dict[str, Any] | None = None
        while True:
            # on the writer: a sink-only database need not allow snapshot isolation
            page = await self.mssql.read_keys_page(self.shape, self.dst, after, self.page_rows,
                                                   sink=True)
            if not page:
                break
            keys = _array([pg_object(self._src_keys, [k[d] for d in self._dst_keys],
                                     self._src_key_types) for k in page])
            rows = await self.source.fetch(self.read_sql, keys)
            nk = len(self._src_keys)
            gone = [dict(zip(self._dst_keys, list(r.values())[2: 2 + nk], strict=True))
                    for r in rows if not r["present"]]
            if gone:
                counts = await self.mssql.apply_batch(self.shape, self.dst, uuid.uuid4(), [],
                                                      gone, self.ctx, signals=0)
                deleted += counts.deleted
            after = page[-1]
            if len(page) < self.page_rows:
                break
        log.info("event=truncate_swept link=%s deleted=%d", self.name, deleted)
        return deleted


# --- the factory the daemon calls ------------------------------------------------------------


def make_drain(shape: LinkShape, src: str, dst: str, config: Config,
               pools: dict[str, asyncpg.Pool], mssql: dict[str, MssqlPeer],
               hub: asyncpg.Pool, max_attempts: int = 8) -> CtToPgDrain | PgToCtDrain:
    """The drain of one (link, direction) with a SQL Server side; one MssqlPeer per peer."""
    link = shape.link
    peers = {s: config.peers[link.side(s).peer] for s in (src, dst)}
    if all(p.dialect == "sqlserver" for p in peers.values()):
        raise ConfigError(
            f"link {link.name!r}: SQL Server to SQL Server links are not supported yet "
            f"({peers[src].name} -> {peers[dst].name}); sync each through a Postgres peer")

    def peer(side: str) -> MssqlPeer:
        name = peers[side].name
        if name not in mssql:
            mssql[name] = MssqlPeer(peers[side], timeouts=Timeouts(
                config.setting("mssql_login_timeout"), config.setting("mssql_query_timeout"),
                config.setting("mssql_lock_timeout")))
            # links of one peer share one poll per interval (issue 18 item 19)
            mssql[name].poll_max_age = 0.5 * config.setting("ct_poll_interval")
        return mssql[name]

    if link.direction == "both" and (src, dst) == link.directions()[0]:
        log.warning(
            "event=no_conflict_check link=%s policy=%s detail=\"two-way links with a SQL "
            "Server side are not conflict-checked: when both sides change a key between two "
            "drains, the side drained last wins (docs/sqlserver.md)\"", link.name, link.conflict)
    if peers[src].dialect == "sqlserver":
        return CtToPgDrain(shape, src, peer(src), pools[peers[dst].name], hub, max_attempts,
                           poll_interval=config.setting("ct_poll_interval"),
                           retention_days=config.setting("ct_retention_days"))
    return PgToCtDrain(shape, src, pools[peers[src].name], peer(dst), hub, max_attempts)

