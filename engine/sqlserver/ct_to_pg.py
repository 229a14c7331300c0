"""SQL Server source -> Postgres sink: change tracking in, one Postgres transaction out.

There is no queue: the source is change tracking, and its cursor (version +
database identity) lives in the Postgres sink's `sync.ct_cursor`, written in the
same transaction as the (last chunk of) rows read up to it, together with the
`sync.applied_batches` record. A crash before that commit re-reads the same
changes and applies them again (current rows: harmless); after it, the cursor
says they are done. Each tick first compares `CHANGE_TRACKING_CURRENT_VERSION()`
with the stored cursor (one cheap query) and only then reads `CHANGETABLE`. A
cursor that is missing, too old (retention, TRUNCATE), ahead of the database or
from another database identity (restore) makes the link resync: every source row
is sent again in keyset pages, then (except on a first run) sink rows whose key
the source no longer has are deleted, then the new cursor is stored. Never skipped.

Rows the sink rejects are isolated by bisection in savepoints (`apply_set`) and
parked in the hub's `sync.dead_letter`; foreign-key misses are re-read from the
dead letters (`_retry_dead`), as change tracking has no queue to defer into.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from syncbridge.engine import faults, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import ConfigError
from syncbridge.engine.contract import Item, Outcome, RowProblem, problem
from syncbridge.engine.hub import dead_letters, report
from syncbridge.engine.postgres import capture
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.postgres.sink import apply_set
from syncbridge.engine.sqlserver import convert
from syncbridge.engine.sqlserver.capture import echo_context
from syncbridge.engine.sqlserver.changes import CtCursor
from syncbridge.engine.sqlserver.ct_resync import PAGE_ROWS, CtRecovery, sweep_sql
from syncbridge.engine.sqlserver.ct_settle import PgSinkSettle, Settled
from syncbridge.engine.sqlserver.peer import MssqlPeer
from syncbridge.engine.sqlserver.two_way import PgRows, Settler

log = logging.getLogger("syncbridge.mssql_drain")
SQL = sqlfiles.Queries("queries/mssql_bridge.sql")
QUEUE = sqlfiles.Queries("postgres/queue.sql")  # the queue statements PgDrain uses too

CURSOR_IDLE_STORE = 60.0  # seconds; an empty window moves the stored cursor at most this often


class CtToPgDrain(CtRecovery, PgSinkSettle):
    """Moves one link's changes from a SQL Server (change tracking) side to a Postgres side."""

    more = True  # polled: the drain loop drains again until a batch brings nothing

    async def flush(self) -> None:
        return None  # counts are written in the batch's path

    def __init__(self, shape: LinkShape, source_side: str, mssql: MssqlPeer,
                 sink: asyncpg.Pool, hub: asyncpg.Pool, max_attempts: int = 8,
                 poll_interval: float = 0.25, page_rows: int = PAGE_ROWS,
                 retention_days: float = 7.0) -> None:
        self.shape = shape
        self.link = shape.link
        self.src = source_side
        self.dst = "b" if source_side == "a" else "a"
        self.mssql, self.sink, self.hub = mssql, sink, hub
        self.sql = pg_sql.render(shape, self.src, self.dst)
        self.sweep_sql = sweep_sql(shape, self.dst)
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
        # two-way links: conflict checks against the Postgres sink's sync.row_state
        self.two_way = self.link.direction == "both"
        self.pg_rows = PgRows(shape, self.dst)
        self.settler = Settler(self.link, self.src, hub, self.name)
        self.to_sink = {ca: (ca if self.dst == "a" else cb) for ca, cb in shape.pairs}

    queue_peer = None  # change tracking, polled: no Postgres queue, no NOTIFY

    async def send_canary(self) -> None:
        return None  # canaries are a Postgres queue's

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
        row = await self.sink.fetchrow(SQL["ct_cursor_read"], self.link.name, self.src)
        self._cursor_at = row["updated_at"] if row else None
        return CtCursor(row["version"], row["db_identity"]) if row else None

    async def drain_once(self) -> int:
        """One tick: retried keys, then a version check, then the changes since the cursor,
        page by page within one version window (the cursor is stored with the last page)."""
        await self._load_meta()
        n = await self._retry_dead()
        if self.two_way:
            n += await self._resend()
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
                skey = convert.pg_object(self._src_keys, kv, self._dst_key_types)
            except ValueError:
                skey = json.dumps({k: str(v) for k, v in zip(self._src_keys, kv, strict=True)})
            try:
                sink_key = convert.pg_object(self._dst_keys, kv, self._dst_key_types)
                payload = sink_key if is_delete else convert.pg_object(
                    self._dst_cols, [row[c] for c in self._src_cols], self._dst_types)
            except ValueError as e:
                out.problems.append(self._problem(skey, e))
                continue
            ka = skey if self.src == "a" else sink_key
            (dels if is_delete else ups).append(Item(skey, sink_key, ka, payload, None))
        return ups, dels

    def _problem(self, source_key: str, exc: BaseException) -> RowProblem:
        # No queue to defer into at a change-tracking source: the row is parked at
        # once, and a foreign-key miss ([23503]) is re-read by _retry_dead later.
        return problem(self.name, source_key, exc, defer=False)

    async def _apply(self, upserts: Sequence[dict[str, Any]], deletes: Sequence[dict[str, Any]],
                     cursor: CtCursor | None, *, signals: int | None = None,
                     close: Sequence[str] = (), forced: set[str] = frozenset(),
                     unknown_base: bool = False) -> Outcome:
        """Deletes, upserts, the batch record and (if given) the new cursor: one transaction.
        Two-way links settle each row first (ct_settle); `forced` (normalized source keys)
        are applied unchecked, and the SQL Server side's bases follow the commit."""
        out = Outcome()
        ups, dels = self._items(upserts, deletes, out)
        batch_id = uuid.uuid4()
        settled = Settled()
        if cursor is not None:
            # the source's restore record first (issue 18 item 13): ahead of the sink's
            # cursor after a crash here is harmless, behind it only after a restore
            await self.mssql.record_client_version(self.link.name, self.src, cursor.version)
            self._stored_at = time.monotonic()
        async with self.sink.acquire() as conn, conn.transaction():
            await conn.execute(QUEUE["set_origin"], self.origin)
            if self.two_way:
                ups, dels, settled = await self._settle(conn, ups, dels, set(forced), out,
                                                        unknown_base)
            # deletes first: a changed key frees unique values before the new row arrives
            out.deletes = await apply_set(conn, self.sql.delete, dels, out,
                                          lambda i, e: self._problem(i.source_key, e))
            out.upserts = await apply_set(conn, self.sql.upsert, ups, out,
                                          lambda i, e: self._problem(i.source_key, e))
            if self.two_way:
                await self._remember(conn, out, settled, batch_id)
            record = out.record()
            if upserts or deletes or signals:  # for a bare cursor move the cursor is the record
                await conn.execute(
                    QUEUE["record_batch"], batch_id, self.link.name, self.src,
                    len(upserts) + len(deletes) if signals is None else signals,
                    out.upserts, out.deletes, record.problems, "[]", "[]", False, None,
                )
            if cursor is not None:
                await conn.execute(SQL["ct_cursor_write"], self.link.name, self.src,
                                   cursor.version, cursor.db_identity)
            if out.problems:
                # In this transaction when the sink is the hub; else before its commit, so a
                # crash can only repeat the entry (the rows are read again), never lose it.
                target = conn if self.hub is self.sink else self.hub
                await dead_letters.write(target, self.link.name, self.src, record.problems)
        faults.hit("after_sink_commit")
        if settled.states:  # the SQL Server side's copy of the bases (see ct_settle)
            await self.mssql.write_states(self.link.name, settled.states)
        if out.upserts + out.deletes or upserts or deletes:
            await report.batch(self.hub, self.link.name, self.src,
                                   out.upserts + out.deletes, 0)
        done = [i.source_key for i in out.applied] + settled.skipped
        if done and (self.open_dead_letters or close):
            await dead_letters.close(self.hub, self.link.name, self.src, done)
        return out
