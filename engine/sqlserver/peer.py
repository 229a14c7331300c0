"""The SQL Server peer at run time: pyodbc behind asyncio, one thread per connection.

Imported only when a sqlserver peer is configured, and pyodbc itself only when
a connection is opened, so a Postgres-only install never needs unixODBC.

Each connection runs on its own thread (connection.Conn, reference §4).

Two connections per peer:
- reader: session isolation SNAPSHOT, manual commit, used only for the change
  tracking read (versions + CHANGETABLE in one snapshot, §1.4) and resync
  pages. It never writes (Msg 3960), and each read commits at once so the
  snapshot's row versions do not pile up in tempdb.
- writer: READ COMMITTED, manual commit, runs each apply batch as one
  transaction with its applied-batch record (§2.1, §2.3).
Change tracking setup runs on a third, short-lived autocommit connection
because ALTER DATABASE cannot run inside a transaction (Msg 226); the
blocking forms for the CLI are in capture.py, the change reads in changes.py.

Cursor convention: a SQL Server source's cursor (`CtCursor`) is stored by the
sink. With a Postgres sink the caller writes it to Postgres sync.ct_cursor in
the same transaction as the rows; with a SQL Server sink pass it to
`apply_batch(cursor=...)`, which stores it in [sync].[ct_cursor] in the batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple

from syncbridge.engine.catalog import LinkShape, Table
from syncbridge.engine.config import Peer, Side
from syncbridge.engine.sqlserver import changes, checks, convert, openjson
from syncbridge.engine.sqlserver import sql as tsql
from syncbridge.engine.sqlserver.capture import (
    DEFAULT_RETENTION_DAYS,
    TableMeta,
    enable,
    key_warnings,
    read_catalog,
)
from syncbridge.engine.sqlserver.changes import (
    CHANGE_PAGE_ROWS,
    ChangeSet,
    CtCursor,
    TwoWayBatch,
)
from syncbridge.engine.sqlserver.connection import (
    Conn,
    SqlServerError,
    Timeouts,
    check_driver,
    connect,
    first_result,
    import_pyodbc,
    odbc_connection_string,
    with_app_name,
)


class ApplyCounts(NamedTuple):
    updated: int
    inserted: int
    deleted: int


class MssqlPeer:
    """Async adapter for one SQL Server peer. Values cross it as Python objects:
    reads return what asyncpg accepts, writes take what asyncpg returned."""

    def __init__(self, peer: Peer, *, driver: Any = None,
                 timeouts: Timeouts | None = None) -> None:
        self.name = peer.name
        self.conn_str = with_app_name(odbc_connection_string(peer.dsn))
        self.timeouts = timeouts or Timeouts()
        self._pyodbc = driver
        self._meta: dict[tuple[str, str], TableMeta] = {}
        self.reader = Conn(self._open_reader, f"{peer.name}-r")
        # One poll per peer (issue 18 item 19): every source table's drain asks
        # poll_version; within poll_max_age one batched answer serves them all.
        self.poll_max_age = 0.0
        self._poll_sides: dict[Side, None] = {}
        self._polled: dict[Side, tuple[int | None, int | None, Any]] = {}
        self._polled_at = -1.0
        self._polling: asyncio.Future[Any] | None = None
        self.writer = Conn(self._open_writer, f"{peer.name}-w")

    # connections

    def _driver(self) -> Any:
        if self._pyodbc is None:
            self._pyodbc = import_pyodbc()
            check_driver(self._pyodbc, self.conn_str)
        return self._pyodbc

    def _connect(self, autocommit: bool) -> Any:
        return connect(self._driver(), self.conn_str, autocommit, self.timeouts)

    def _open_reader(self) -> Any:
        cn = self._connect(autocommit=True)  # no transaction open yet (§1.4)
        cn.execute("SET TRANSACTION ISOLATION LEVEL SNAPSHOT;")  # session-level, sticks
        cn.autocommit = False  # every driver-started transaction is now SNAPSHOT
        return cn

    def _open_writer(self) -> Any:
        return self._connect(autocommit=False)

    async def close(self) -> None:
        await self.reader.close()
        await self.writer.close()

    # catalog

    async def read_table(self, side: Side) -> Table | None:
        """Catalog facts of one table (None if absent); also caches collations/IDENTITY."""
        return await self.writer.run(self._read_table, side)  # READ COMMITTED for the catalog

    def _read_table(self, cn: Any, side: Side) -> Table | None:
        try:
            table, meta = read_catalog(cn.cursor(), side)
        finally:
            cn.commit()
        if table is not None:
            self._meta[(side.schema, side.table)] = meta
        return table

    def key_collation_warnings(self, table: Table) -> list[checks.Finding]:
        """Text key columns whose values SQL Server would merge while Postgres keeps them
        apart (§3). Trailing spaces: SQL Server pads strings for = under EVERY collation
        (SQL-92; learn.microsoft.com .../string-comparison-assignment), so 'abc' and
        'abc ' are one key whatever the collation, BIN2 included. Case and accents: only
        _CI / _AI collations."""
        meta = self._meta.get((table.schema, table.name), TableMeta())
        return key_warnings(table, meta)

    async def ensure_ready(self, side: Side, *, source: bool, sink: bool,
                           retention_days: float) -> list[checks.Finding]:
        """Refuse to start a drain on a peer that cannot work (SqlServerError naming the
        fix); returns the warnings. Read-only, on the writer (READ COMMITTED)."""
        table = await self.read_table(side)
        if table is None:
            raise SqlServerError(f"table {side.qualified} does not exist on peer {self.name!r}")
        meta = self._meta.get((side.schema, side.table), TableMeta())

        def run(cn: Any) -> list[checks.Finding]:
            cur = cn.cursor()
            try:
                found = checks.database(cur, source=source, retention_days=retention_days)
                found += checks.tables(cur, [checks.Role(side, source, sink,
                                                         bool(meta.identity))], None)
            finally:
                cn.commit()
            return found

        found = await self.writer.run(run)
        found += key_warnings(table, meta) if sink else []
        bad = checks.errors(found)
        if bad:
            raise SqlServerError(f"peer {self.name!r} is not ready:\n{checks.render(bad)}")
        return [f for f in found if f not in bad]

    async def prune_applied(self, days: int) -> None:
        """Drop applied-batch records older than `days` (one bounded delete)."""

        def run(cn: Any) -> None:
            cn.cursor().execute(tsql.static("prune_applied").sql, days)
            cn.commit()

        await self.writer.run(run)

    # change tracking

    async def poll_version(self, side: Side) -> tuple[int | None, int | None, Any]:
        """(CHANGE_TRACKING_CURRENT_VERSION(), the table's min valid version, the table's
        last ALTER time). Idle only when the first equals the stored cursor AND the
        second is not above it: TRUNCATE raises the min valid version without
        necessarily moving the current one (issue 18 item 14).

        One round trip per peer, not per link: the first caller polls every table
        registered so far in one statement; callers within poll_max_age seconds (and
        those waiting on a poll in flight) share its answer. An answer at most that
        old is safe: the version only bounds the next read from above."""
        loop = asyncio.get_running_loop()
        if side not in self._poll_sides:
            self._poll_sides[side] = None
        elif loop.time() - self._polled_at <= self.poll_max_age and side in self._polled:
            return self._polled[side]
        if self._polling is None:
            self._polling = asyncio.ensure_future(self._poll_all(list(self._poll_sides)))
        polling = self._polling
        try:
            got = await asyncio.shield(polling)
        finally:
            if self._polling is polling and polling.done():
                self._polling = None
        if side not in got:  # registered while another poll was in flight: ask again
            return await self.poll_version(side)
        return got[side]

    async def _poll_all(self, sides: list[Side]) -> dict[Side, tuple[int | None, int | None,
                                                                     Any]]:
        def run(cn: Any) -> list[Any]:
            r = tsql.poll_tables(len(sides))
            try:
                return cn.cursor().execute(r.sql, *(tsql.side_name(s) for s in sides)).fetchall()
            finally:
                cn.commit()

        rows = await self.reader.run(run)
        self._polled = {sides[r[0]]: (r[1], r[2], r[3]) for r in rows}
        self._polled_at = asyncio.get_running_loop().time()
        return self._polled

    async def db_identity(self) -> str | None:
        def run(cn: Any) -> str | None:
            try:
                return changes.db_identity(cn.cursor())
            finally:
                cn.commit()

        return await self.reader.run(run)

    async def read_changes(self, shape: LinkShape, side: str, cursor: CtCursor | None,
                           ctx: bytes, *, after: dict[str, Any] | None = None,
                           upto: int | None = None,
                           limit: int = CHANGE_PAGE_ROWS) -> ChangeSet:
        """One page of the changes of `side` since `cursor`, as current rows and gone keys.

        The window's upper bound is CHANGE_TRACKING_CURRENT_VERSION() read FIRST,
        before the snapshot opens (Dotmim.Sync, Estuary; reference §1.4
        correction): a change committed in between is then read again next time,
        never skipped. The first page reads it (upto=None); later pages pass
        after=previous next_after and upto=new_cursor.version. Then one snapshot
        transaction: identity, restore record, validity, CHANGETABLE page.
        resync_needed when there is no cursor yet, it predates the min valid
        version (retention, TRUNCATE), it is ahead of the database, the database
        identity changed, or the source's record of the last stored version is
        behind the cursor (restored, issue 18 item 13); then the lists are empty
        and the caller signals every key, storing new_cursor once that is done.
        """
        return await self.reader.run(changes.read_changes, self.name, shape, side, cursor,
                                     ctx, after, upto, limit)

    async def record_client_version(self, link: str, source_side: str, version: int) -> None:
        """Microsoft's "Change Tracking and Data Restore" record: the version this link is
        about to store at its sink, written on the source (writer, own transaction) just
        BEFORE the sink commits it. After a restore to an earlier point the record comes
        back older than the sink's cursor, and read_changes resyncs instead of diverging."""

        def run(cn: Any) -> None:
            cn.cursor().execute(tsql.static("client_version_write").sql, link, source_side,
                                version)
            cn.commit()

        await self.writer.run(run)

    async def read_keys_page(self, shape: LinkShape, side: str, after: dict[str, Any] | None,
                             limit: int = 1000, *, values: bool = False,
                             sink: bool = False) -> list[dict[str, Any]]:
        """Keys (or whole rows with values=True) after `after` in key order; [] at the end.

        sink=True reads on the writer connection (READ COMMITTED): a sink-only
        database need not allow snapshot isolation, and the reader's SNAPSHOT
        session would fail there with Msg 3952 (issue 18 item 2)."""
        conn = self.writer if sink else self.reader
        return await conn.run(changes.keys_page, shape, side, after, limit, values)

    async def read_rows(self, shape: LinkShape, side: str,
                        keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Current rows of `side` for these keys (conflict checks, repair); absent keys omitted."""
        table = shape.table(side)
        meta = self._meta.get((table.schema, table.name), TableMeta())
        return await self.reader.run(changes.read_rows, shape, side, meta, keys)

    async def applied(self, batch_id: uuid.UUID) -> bool:
        """Was this batch already applied here (its record commits with its rows)?"""

        def run(cn: Any) -> bool:
            try:
                return cn.cursor().execute(tsql.static("applied").sql, str(batch_id)).fetchone() \
                    is not None
            finally:
                cn.commit()

        return await self.writer.run(run)

    async def apply_batch(self, shape: LinkShape, side: str, batch_id: uuid.UUID,
                          upserts: Sequence[dict[str, Any]], deletes: Sequence[dict[str, Any]],
                          ctx: bytes, *, signals: int | None = None,
                          cursor: CtCursor | None = None) -> ApplyCounts:
        """Make `side` match: upsert these rows, delete these keys, record the batch, commit.

        Rows and keys use this side's column names and the Python values asyncpg
        returned. One transaction (XACT_ABORT ON): all of it or none of it. A
        value that cannot travel raises BadRow before anything is sent.
        """
        batch = TwoWayBatch(upserts, deletes)
        sql, params = self._batch(shape, side, batch_id, batch, ctx, signals, cursor, False)
        return await self.writer.run(self._apply, sql, params)

    async def apply_two_way(self, shape: LinkShape, side: str, batch_id: uuid.UUID,
                            keys: Sequence[tuple[str, dict[str, Any]]],
                            settle: Callable[[list[changes.SinkState]], Awaitable[TwoWayBatch]],
                            ctx: bytes, *, signals: int) -> ApplyCounts:
        """A two-way link's batch in ONE writer transaction: read the sink rows and bases
        of `keys` ((a-key text, key values) pairs) under UPDLOCK, HOLDLOCK; let `settle`
        decide (conflicts.decide) what to write; then apply that with the bases and the
        keys to send back, record the batch, commit. No write to these keys can come in
        between the read and the apply, and the base moves with the rows it describes."""
        table = shape.table(side)
        meta = self._meta.get((table.schema, table.name)) or TableMeta()
        async with self.writer.held() as run:
            found = await run(changes.read_state, shape, side, meta, keys, shape.link.name)
            batch = await settle(found)
            sql, params = self._batch(shape, side, batch_id, batch, ctx, signals, None, True)
            return await run(self._apply, sql, params)

    async def write_states(self, link: str, states: Sequence[tuple[str, str | None]]) -> None:
        """Bases of this SQL Server side as a SOURCE, after its Postgres sink committed the
        rows (its own transaction; ((a-key text, image text or None), ...))."""
        payload = convert.states_json(states)

        def run(cn: Any) -> None:
            cn.cursor().execute(tsql.state_write().sql, link, payload)
            cn.commit()

        await self.writer.run(run)

    async def execute(self, name: str, *params: Any) -> list[Any]:
        """A statement of ct.sql without placeholders (STATIC_PARAMS) on the writer,
        committed at once; its first result set (resend_read), [] when it has none."""

        def run(cn: Any) -> list[Any]:
            try:
                return first_result(cn.cursor().execute(tsql.static(name).sql, *params))
            finally:
                cn.commit()

        return await self.writer.run(run)

    def _batch(self, shape: LinkShape, side: str, batch_id: uuid.UUID, batch: TwoWayBatch,
               ctx: bytes, signals: int | None, cursor: CtCursor | None,
               with_state: bool) -> tuple[str, list[Any]]:
        """The apply batch's T-SQL and its parameters, in order."""
        table = shape.table(side)
        meta = self._meta.get((table.schema, table.name)) or TableMeta()
        cols = shape.cols(side)
        rendered = openjson.apply(
            shape, side, with_cursor=cursor is not None, collations=meta.collations,
            identity_insert=any(c in meta.identity for c in cols), identity=meta.identity,
            with_state=with_state,
        )
        upserts, deletes = batch.upserts, batch.deletes
        bound = {
            "ctx": ctx,
            "rows": convert.json_text(convert.dedupe(convert.encode_rows(table, cols, upserts),
                                                     len(shape.key_cols(side)))),
            "dels": convert.json_text(convert.encode_rows(table, shape.key_cols(side), deletes)),
            "batch": str(batch_id),
            "link": shape.link.name,
            "source_side": "b" if side == "a" else "a",
            "signals": signals if signals is not None else len(upserts) + len(deletes),
            "version": cursor.version if cursor else None,
            "db_identity": cursor.db_identity if cursor else None,
            "states": convert.states_json(batch.states) if with_state else None,
            "resend": convert.json_text(list(dict.fromkeys(batch.resend))) if with_state
            else None,
        }
        return rendered.sql, [bound[n] for n in rendered.params]

    @staticmethod
    def _apply(cn: Any, sql: str, params: list[Any]) -> ApplyCounts:
        cur = cn.cursor()
        cur.execute(sql, *params)
        counts = first_result(cur)
        while cur.nextset():  # surface errors raised after the counts (§2.3)
            pass
        cn.commit()
        u, i, d = counts[0]
        return ApplyCounts(u, i, d)

    # setup (autocommit)

    async def enable_change_tracking(self, sides: Iterable[Side],
                                     retention: int = DEFAULT_RETENTION_DAYS,
                                     unit: str = "DAYS") -> list[str]:
        """Snapshot isolation + CT on the database and each table; idempotent (§1.1).

        Returns the statements it ran. Runs with autocommit on its own
        connection: ALTER DATABASE inside a transaction fails (Msg 226).
        """

        def run() -> list[str]:
            cn = self._connect(autocommit=True)
            try:
                return enable(cn.cursor(), list(sides), retention, unit)
            finally:
                cn.close()

        return await asyncio.to_thread(run)
