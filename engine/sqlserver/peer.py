"""The SQL Server peer at run time: pyodbc behind asyncio, one thread per connection.

Imported only when a sqlserver peer is configured, and pyodbc itself only when
a connection is opened, so a Postgres-only install never needs unixODBC.

pyodbc blocks and has threadsafety 1 (share the module, not a connection), and
a pyodbc transaction must stay on the thread that began it; so each connection
gets its own single-thread executor (reference §4) and every call for that
connection runs there, one at a time, while the event loop keeps going.

Two connections per peer:
- reader: session isolation SNAPSHOT, manual commit, used only for the change
  tracking read (versions + CHANGETABLE in one snapshot, §1.4) and resync
  pages. It never writes (Msg 3960), and each read commits at once so the
  snapshot's row versions do not pile up in tempdb.
- writer: READ COMMITTED, manual commit, runs each apply batch as one
  transaction with its applied-batch record (§2.1, §2.3).
Change tracking setup runs on a third, short-lived autocommit connection
because ALTER DATABASE cannot run inside a transaction (Msg 226); the
blocking read_table_sync / install_capture / uninstall_capture serve the CLI.

Cursor convention: a SQL Server source's cursor (`CtCursor`) is stored by the
sink. With a Postgres sink the caller writes it to Postgres sync.ct_cursor in
the same transaction as the rows; with a SQL Server sink pass it to
`apply_batch(cursor=...)`, which stores it in [sync].[ct_cursor] in the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from syncbridge.engine.catalog import Column, LinkShape, Table
from syncbridge.engine.config import Peer, Side
from syncbridge.engine.sqlserver import checks, types
from syncbridge.engine.sqlserver import sql as q

DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
DEFAULT_PORT = 1433
DEFAULT_RETENTION_DAYS = 7  # CT retention; must exceed the longest bridge outage
ECHO_NAMESPACE = uuid.UUID("6f1d3c52-4f0e-4c59-9d59-3b8f5a1f3e11")  # uuid5 namespace
SS_TIMESTAMPOFFSET = -155  # ODBC type of datetimeoffset (msodbcsql.h)
APP_NAME = "syncbridge"  # APP= in every connection string: sys.dm_exec_sessions.program_name
CHANGE_PAGE_ROWS = 5000  # CHANGETABLE rows per snapshot read (issue 18 item 18)
# SQLSTATEs worth a retry: link failure, connection failure, timeout, deadlock /
# serialization (SQL Server reports 1205 as 40001), snapshot update conflict (3960).
TRANSIENT_SQLSTATES = frozenset({"08S01", "08001", "08004", "HYT00", "HYT01", "40001"})
# Native errors: 1205 deadlock victim, 1222 lock request timeout (SET LOCK_TIMEOUT),
# 3960/3961 snapshot conflicts, 40197/40501/40613/4991x Azure SQL transient faults.
TRANSIENT_ERRORS = frozenset({1205, 1222, 3960, 3961, 40197, 40501, 40613, 49918, 49919,
                              49920})
# pyodbc (src/errors.cpp, GetErrorFromHandle) builds args[1] from the ODBC diagnostic
# records as "[SQLSTATE] message (native) (SQLFunction)" for the first record and
# "; [SQLSTATE] message (native)" for each further one (only the first on non-Windows).
# The native number is the "(n)" that ends a record, never one inside the message text.
_NATIVE = re.compile(r"\((-?\d+)\)(?: \(SQL\w+\))?(?=; \[[0-9A-Z]{5}\] |\s*$)")

INSTALL_HELP = (
    "SQL Server peers need pyodbc and an ODBC driver. On Debian/Ubuntu:\n"
    "  apt-get install unixodbc            # libodbc.so.2, which pyodbc loads\n"
    "  then Microsoft's msodbcsql18 package (add packages.microsoft.com's apt repo, then\n"
    "  ACCEPT_EULA=Y apt-get install msodbcsql18) for 'ODBC Driver 18 for SQL Server',\n"
    "  or apt-get install tdsodbc for FreeTDS (driver name 'FreeTDS', TDS_Version=7.4)\n"
    "  pip install 'syncbridge[sqlserver]'  # pyodbc"
)


class SqlServerUnavailable(RuntimeError):
    """pyodbc or the configured ODBC driver is missing; the message says what to install."""


class SqlServerError(RuntimeError):
    """The peer is reachable but not set up as the bridge needs (message says how to fix)."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds; 0 = none. Login (pyodbc.connect timeout=), query (Connection.timeout,
    HYT00 when exceeded) and lock waits (SET LOCK_TIMEOUT, Msg 1222): pyodbc's default
    is to wait forever, which would stall a link behind one blocked lock."""

    login: int = 15
    query: int = 300
    lock: int = 30


class Unsendable:
    """A value read from SQL Server that Postgres cannot hold (NUL in text, 100 ns ticks).
    Stands in for the value so the conversion of the other rows goes on; encoding it for
    Postgres raises ValueError with `reason`, which dead-letters just that row."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unsendable: {self.reason}>"

    __str__ = __repr__


class BadRow(ValueError):
    """One row cannot be sent to the other side; the drain loop dead-letters just this row."""

    def __init__(self, index: int, column: str, reason: str) -> None:
        super().__init__(f"row {index}, column {column!r}: {reason}")
        self.index, self.column, self.reason = index, column, reason


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


class ApplyCounts(NamedTuple):
    updated: int
    inserted: int
    deleted: int


@dataclass
class TableMeta:
    """What the apply batch needs beyond catalog.Table: collations and IDENTITY columns."""

    collations: dict[str, str] = field(default_factory=dict)
    identity: frozenset[str] = frozenset()


# --- driver and connection string -------------------------------------------------------------


def import_pyodbc() -> Any:
    """pyodbc, or SqlServerUnavailable saying exactly what to install."""
    try:
        import pyodbc
    except ImportError as e:  # no pyodbc, or no libodbc.so.2 (unixODBC) for it to load
        raise SqlServerUnavailable(f"cannot import pyodbc ({e}).\n{INSTALL_HELP}") from None
    return pyodbc


def check_driver(pyodbc: Any, conn_str: str) -> None:
    """Fail early, naming the installed drivers, when the configured one is absent."""
    wanted = odbc_driver(conn_str)
    if wanted is None:
        return  # a DSN= entry from odbc.ini: the driver manager resolves it
    installed = list(pyodbc.drivers())
    if wanted not in installed:
        raise SqlServerUnavailable(
            f"ODBC driver {wanted!r} is not installed (installed: {installed or 'none'}).\n"
            f"{INSTALL_HELP}"
        )


def odbc_driver(conn_str: str) -> str | None:
    m = re.search(r"(?:^|;)\s*driver\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)", conn_str, re.IGNORECASE)
    if not m:
        return None
    value = m.group(1).strip()
    return value[1:-1].replace("}}", "}") if value.startswith("{") else value


def _odbc_value(value: str) -> str:
    """Brace a value holding ; { } or edge spaces (ODBC rule: } doubled inside braces)."""
    if re.search(r"[;{}]|^\s|\s$", value):
        return "{" + value.replace("}", "}}") + "}"
    return value


def odbc_connection_string(dsn: str) -> str:
    """An ODBC connection string from either that or an mssql:// URL.

    mssql://user:pass@host:port/db?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes
    -> Driver={ODBC Driver 18 for SQL Server};Server=tcp:host,port;Database=db;UID=user;PWD=pass;
       TrustServerCertificate=yes
    Other query keys pass through unchanged (Encrypt, TDS_Version, ...);
    mssql:///?odbc_connect=<url-encoded ODBC string> carries a whole ODBC string
    (SQLAlchemy's spelling), which is how yoyo gets an ODBC-string DSN.
    """
    parts = urlsplit(dsn)
    if parts.scheme.lower() not in ("mssql", "sqlserver", "mssql+pyodbc"):
        return dsn
    args = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "odbc_connect" in args:
        return args["odbc_connect"]
    driver = next((args.pop(k) for k in list(args) if k.lower() == "driver"), DEFAULT_DRIVER)
    pairs: list[tuple[str, str]] = [("Driver", "{" + driver.replace("}", "}}") + "}")]
    if parts.hostname:
        server = parts.hostname
        if "freetds" in driver.lower():
            pairs += [("Server", server), ("Port", str(parts.port or DEFAULT_PORT))]
        else:
            pairs.append(("Server", f"tcp:{server},{parts.port or DEFAULT_PORT}"))
    database = unquote(parts.path.lstrip("/"))
    if database:
        pairs.append(("Database", _odbc_value(database)))
    if parts.username is not None:
        pairs.append(("UID", _odbc_value(unquote(parts.username))))
    if parts.password is not None:
        pairs.append(("PWD", _odbc_value(unquote(parts.password))))
    pairs += [(k, _odbc_value(v)) for k, v in args.items()]
    return ";".join(f"{k}={v}" for k, v in pairs) + ";"


def with_app_name(conn_str: str) -> str:
    """APP=syncbridge appended unless the string names an application already."""
    if re.search(r"(?:^|;)\s*app\s*=", conn_str, re.IGNORECASE):
        return conn_str
    return conn_str + ("" if conn_str.rstrip().endswith(";") else ";") + f"APP={APP_NAME};"


def echo_context(link: str) -> bytes:
    """The CHANGE_TRACKING_CONTEXT of this bridge's writes for one link (16 bytes, never NULL).

    Per link, not per bridge: a table in two links must still pass the other
    link's writes on; only a link's own applies are filtered from its reads.
    """
    return uuid.uuid5(ECHO_NAMESPACE, link).bytes


def native_errors(exc: BaseException) -> list[int]:
    """SQL Server's native error numbers of a pyodbc error, one per diagnostic record."""
    args = getattr(exc, "args", ())
    text = str(args[1]) if len(args) > 1 else (str(args[0]) if args else "")
    return [int(m.group(1)) for m in _NATIVE.finditer(text)]


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry with backoff can cure (connection lost, deadlock, timeout)."""
    args = getattr(exc, "args", ())
    state = str(args[0]) if args else ""
    if state in TRANSIENT_SQLSTATES:
        return True
    return any(n in TRANSIENT_ERRORS for n in native_errors(exc))


def mssql_type(type_name: str, max_length: int, precision: int, scale: int) -> str:
    """sys.columns facts -> the spelling mssql_types and mssql_sql expect."""
    t = type_name.lower()
    if t in ("nvarchar", "nchar"):
        return f"{t}(max)" if max_length == -1 else f"{t}({max_length // 2})"
    if t in ("varchar", "char", "varbinary", "binary"):
        return f"{t}(max)" if max_length == -1 else f"{t}({max_length})"
    if t in ("decimal", "numeric"):
        return f"decimal({precision},{scale})"
    if t in ("datetime2", "datetimeoffset", "time"):
        return f"{t}({scale})"
    if t == "float":
        return "float" if precision > 24 else "real"
    return t


# --- the peer ---------------------------------------------------------------------------------


class _Conn:
    """One pyodbc connection and the single thread that may touch it."""

    def __init__(self, opener: Callable[[], Any], name: str) -> None:
        self._opener = opener
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mssql-{name}")
        self.cn: Any = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn, args)

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if self.cn is None:
            self.cn = self._opener()
        try:
            return fn(self.cn, *args)
        except Exception as e:
            self._after_error(e)
            raise

    def _after_error(self, e: Exception) -> None:
        """Roll back after a statement error; drop a broken connection so the next call
        reconnects (a transient error usually means the link itself is gone)."""
        if not is_transient(e):
            try:
                self.cn.rollback()
                return
            except Exception:
                pass
        with contextlib.suppress(Exception):
            self.cn.close()
        self.cn = None

    async def close(self) -> None:
        def _close(cn: Any) -> None:
            cn.close()

        if self.cn is not None:
            await self.run(_close)
            self.cn = None
        self._pool.shutdown(wait=False)


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
        self.reader = _Conn(self._open_reader, f"{peer.name}-r")
        # One poll per peer (issue 18 item 19): every source table's drain asks
        # poll_version; within poll_max_age one batched answer serves them all.
        self.poll_max_age = 0.0
        self._poll_sides: dict[Side, None] = {}
        self._polled: dict[Side, tuple[int | None, int | None, Any]] = {}
        self._polled_at = -1.0
        self._polling: asyncio.Future[Any] | None = None
        self.writer = _Conn(self._open_writer, f"{peer.name}-w")

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
            cn.cursor().execute(q.static("prune_applied").sql, days)
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
            r = q.poll_tables(len(sides))
            try:
                return cn.cursor().execute(r.sql, *(q.side_name(s) for s in sides)).fetchall()
            finally:
                cn.commit()

        rows = await self.reader.run(run)
        self._polled = {sides[r[0]]: (r[1], r[2], r[3]) for r in rows}
        self._polled_at = asyncio.get_running_loop().time()
        return self._polled

    async def db_identity(self) -> str | None:
        def run(cn: Any) -> str | None:
            try:
                return self._identity(cn.cursor())
            finally:
                cn.commit()

        return await self.reader.run(run)

    @staticmethod
    def _identity(cur: Any) -> str | None:
        row = cur.execute(q.static("db_identity").sql).fetchone()
        return row[0].lower() if row else None

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
        return await self.reader.run(self._read_changes, shape, side, cursor, ctx, after,
                                     upto, limit)

    def _read_changes(self, cn: Any, shape: LinkShape, side: str, cursor: CtCursor | None,
                      ctx: bytes, after: dict[str, Any] | None, upto: int | None,
                      limit: int) -> ChangeSet:
        table = shape.table(side)
        src = shape.link.side(side)
        cur = cn.cursor()
        if upto is None:
            obj = q.side_name(src)
            try:
                upto = cur.execute(q.static("poll").sql, obj, obj).fetchone()[0]
            finally:
                cn.commit()  # no snapshot may be open while the bound is read
        try:
            # A table read first: under the driver's implicit transactions a SELECT
            # without a table (like the versions query) opens no transaction, so the
            # snapshot would not yet cover the validity check (§1.4, §7.4).
            ident = self._identity(cur)
            record = cur.execute(q.static("client_version_read").sql, shape.link.name,
                                 side).fetchone()
            now_v, min_v = cur.execute(q.static("versions").sql, q.side_name(src)).fetchone()
            if upto is None or now_v is None or min_v is None:
                raise SqlServerError(
                    f"change tracking is off for {src.qualified} on peer {self.name!r}, or the "
                    f"login lacks VIEW CHANGE TRACKING on it (run `syncbridge install`)"
                )
            new = CtCursor(upto, ident)
            if (cursor is None or cursor.version < min_v or cursor.version > now_v
                    or (cursor.db_identity and ident and cursor.db_identity != ident)
                    or record is None or record[0] < cursor.version):
                return ChangeSet([], [], new, True, None, min_v)
            keys = shape.key_cols(side)
            r = q.changes(shape, side, first=after is None)
            params: list[Any] = [cursor.version, ctx, upto, limit]
            if after is not None:
                params += [_param(after[k], table.columns[k].type) for k in keys]
            rows = _result(cur.execute(r.sql, *params))
        finally:
            cn.commit()  # end the snapshot at once (§1.4: keep them short)
        cs = self._split_changes(shape, side, table, rows, new)
        more = None
        if len(rows) >= limit:  # a full page: there may be more in this window
            more = {k: types.to_postgres(v, table.columns[k].type)
                    for k, v in zip(keys, rows[-1][3: 3 + len(keys)], strict=True)}
        return cs._replace(next_after=more, min_valid=min_v)

    async def record_client_version(self, link: str, source_side: str, version: int) -> None:
        """Microsoft's "Change Tracking and Data Restore" record: the version this link is
        about to store at its sink, written on the source (writer, own transaction) just
        BEFORE the sink commits it. After a restore to an earlier point the record comes
        back older than the sink's cursor, and read_changes resyncs instead of diverging."""

        def run(cn: Any) -> None:
            cn.cursor().execute(q.static("client_version_write").sql, link, source_side,
                                version)
            cn.commit()

        await self.writer.run(run)

    def _split_changes(self, shape: LinkShape, side: str, table: Table, rows: list[Any],
                       new: CtCursor) -> ChangeSet:
        cols, keys = shape.cols(side), shape.key_cols(side)
        other = shape.table("b" if side == "a" else "a")
        targets = dict(shape.pairs) if side == "a" else {b: a for a, b in shape.pairs}
        upserts, deletes = [], []
        for r in rows:
            values = r[3:]
            if r[2]:  # present: upsert its current values
                upserts.append({
                    c: _to_postgres(v, table.columns[c].type, other.columns[targets[c]].type)
                    for c, v in zip(cols, values, strict=True)
                })
            else:  # gone, whatever SYS_CHANGE_OPERATION says (§1.4)
                deletes.append({
                    c: _to_postgres(v, table.columns[c].type)
                    for c, v in zip(keys, values[: len(keys)], strict=True)
                })
        return ChangeSet(upserts, deletes, new, False)

    # resync

    async def read_keys_page(self, shape: LinkShape, side: str, after: dict[str, Any] | None,
                             limit: int = 1000, *, values: bool = False,
                             sink: bool = False) -> list[dict[str, Any]]:
        """Keys (or whole rows with values=True) after `after` in key order; [] at the end.

        sink=True reads on the writer connection (READ COMMITTED): a sink-only
        database need not allow snapshot isolation, and the reader's SNAPSHOT
        session would fail there with Msg 3952 (issue 18 item 2)."""
        conn = self.writer if sink else self.reader
        return await conn.run(self._keys_page, shape, side, after, limit, values)

    def _keys_page(self, cn: Any, shape: LinkShape, side: str, after: dict[str, Any] | None,
                   limit: int, values: bool) -> list[dict[str, Any]]:
        table = shape.table(side)
        keys = shape.key_cols(side)
        cols = shape.cols(side) if values else keys
        r = q.keys_page(shape, side, first=after is None, values=values)
        params: list[Any] = [limit]
        if after is not None:
            params += [_param(after[k], table.columns[k].type) for k in keys]
        try:
            rows = _result(cn.cursor().execute(r.sql, *params))
        finally:
            cn.commit()
        return [
            {c: _to_postgres(v, table.columns[c].type) for c, v in zip(cols, row, strict=True)}
            for row in rows
        ]

    async def read_rows(self, shape: LinkShape, side: str,
                        keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Current rows of `side` for these keys (conflict checks, repair); absent keys omitted."""
        return await self.reader.run(self._read_rows, shape, side, keys)

    def _read_rows(self, cn: Any, shape: LinkShape, side: str,
                   keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        table = shape.table(side)
        cols, kcols = shape.cols(side), shape.key_cols(side)
        meta = self._meta.get((table.schema, table.name), TableMeta())
        payload = _json([{f"c{i}": types.to_transport(k[c], table.columns[c].type)
                          for i, c in enumerate(kcols)} for k in keys])
        try:
            rows = _result(cn.cursor().execute(
                q.rows_for_keys(shape, side, meta.collations).sql, payload))
        finally:
            cn.commit()
        return [
            {c: _to_postgres(v, table.columns[c].type) for c, v in zip(cols, row, strict=True)}
            for row in rows
        ]

    # applying

    async def applied(self, batch_id: uuid.UUID) -> bool:
        """Was this batch already applied here (its record commits with its rows)?"""

        def run(cn: Any) -> bool:
            try:
                return cn.cursor().execute(q.static("applied").sql, str(batch_id)).fetchone() \
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
        table = shape.table(side)
        meta = self._meta.get((table.schema, table.name)) or TableMeta()
        cols = shape.cols(side)
        rendered = q.apply(
            shape, side, with_cursor=cursor is not None, collations=meta.collations,
            identity_insert=any(c in meta.identity for c in cols), identity=meta.identity,
        )
        bound = {
            "ctx": ctx,
            "rows": _json(_dedupe(_encode(table, cols, upserts), len(shape.key_cols(side)))),
            "dels": _json(_encode(table, shape.key_cols(side), deletes)),
            "batch": str(batch_id),
            "link": shape.link.name,
            "source_side": "b" if side == "a" else "a",
            "signals": signals if signals is not None else len(upserts) + len(deletes),
            "version": cursor.version if cursor else None,
            "db_identity": cursor.db_identity if cursor else None,
        }
        params = [bound[n] for n in rendered.params]
        return await self.writer.run(self._apply, rendered.sql, params)

    @staticmethod
    def _apply(cn: Any, sql: str, params: list[Any]) -> ApplyCounts:
        cur = cn.cursor()
        cur.execute(sql, *params)
        counts = _result(cur)
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
                return _enable(cn.cursor(), list(sides), retention, unit)
            finally:
                cn.close()

        return await asyncio.to_thread(run)


def connect(pyodbc: Any, conn_str: str, autocommit: bool, timeouts: Timeouts) -> Any:
    """A pyodbc connection with login, query and lock timeouts (issue 18 items 16, 17)."""
    cn = pyodbc.connect(conn_str, autocommit=autocommit, timeout=timeouts.login)
    cn.timeout = timeouts.query  # HYT00 (transient) when a statement runs longer
    cn.add_output_converter(SS_TIMESTAMPOFFSET, types.datetimeoffset_from_odbc)
    if timeouts.lock:
        # An int spliced into a SET (it takes no parameter); opens no transaction.
        cn.execute(f"SET LOCK_TIMEOUT {int(timeouts.lock) * 1000};")
    return cn


def _to_postgres(value: Any, mssql_type: str, pg_type: str | None = None) -> Any:
    """types.to_postgres, or an Unsendable stand-in: one bad value costs its row only."""
    try:
        return types.to_postgres(value, mssql_type, pg_type)
    except ValueError as e:
        return Unsendable(str(e))


def key_warnings(table: Table, meta: TableMeta) -> list[checks.Finding]:
    """Warnings about text key columns (see MssqlPeer.key_collation_warnings)."""
    out = []
    for k in table.pk:
        if types.parse_mssql(table.columns[k].type).kind != "text":
            continue
        name = f"{table.schema}.{table.name}.{k}"
        out.append(checks.Finding(
            checks.WARNING,
            f"{name} is a text key: SQL Server ignores trailing spaces in = under every "
            "collation (BIN2 included), so 'abc' and 'abc ' are one key here but two in "
            "Postgres, and the second fails with 2627",
            f'on the Postgres table of the link: ALTER TABLE <table> ADD CHECK ("{k}" = '
            f'rtrim("{k}"));'))
        coll = meta.collations.get(k, "")
        if "_CI" in coll or "_AI" in coll:
            out.append(checks.Finding(
                checks.WARNING, f"{name} uses {coll}: 'a' and 'A' are one key here",
                f"ALTER TABLE {q.qualified(table.schema, table.name)} ALTER COLUMN {q.qi(k)} "
                f"{table.columns[k].type} COLLATE Latin1_General_100_BIN2 NOT NULL; (drop and "
                "re-create the primary key around it)"))
    return out


def read_catalog(cur: Any, side: Side) -> tuple[Table | None, TableMeta]:
    """Columns (computed and rowversion left out), primary key, collations, IDENTITY."""
    obj = q.side_name(side)
    rows = cur.execute(q.static("table_columns").sql, obj).fetchall()
    if not rows:
        return None, TableMeta()
    pk = tuple(r[0] for r in cur.execute(q.static("table_pk_columns").sql, obj).fetchall())
    cols = {r[0]: Column(r[0], mssql_type(r[1], r[2], r[3], r[4]), bool(r[5])) for r in rows}
    meta = TableMeta({r[0]: r[6] for r in rows if r[6]}, frozenset(r[0] for r in rows if r[7]))
    return Table(side.schema, side.table, cols, pk), meta


def _enable(cur: Any, sides: list[Side], retention: int, unit: str,
            notes: list[str] | None = None) -> list[str]:
    """Refuses (SqlServerError) a database the bridge cannot use before altering anything:
    compatibility level below 130 (OPENJSON), or not the writable primary. A change
    retention already on and shorter than the configured one is reported in `notes`
    with the statement that lengthens it, not changed behind the DBA's back."""
    ran: list[str] = []

    def do(r: q.Rendered) -> None:
        cur.execute(r.sql)
        ran.append(r.sql)

    found = checks.database(cur, source=False, retention_days=retention)
    if checks.errors(found):
        raise SqlServerError(checks.render(checks.errors(found)))
    db = cur.execute(q.static("db_name").sql).fetchone()[0]
    if notes is not None and unit.upper() == "DAYS":
        notes += [f"{f.what}; fix: {f.fix}" for f in
                  checks.database(cur, source=True, retention_days=retention)
                  if f.level == checks.WARNING]
    if cur.execute(q.static("db_snapshot_state").sql).fetchone()[0] != "ON":
        do(q.enable_db_snapshot(db))
    if cur.execute(q.static("db_ct_state").sql).fetchone() is None and \
            (cur.execute(q.static("db_ct_version").sql).fetchone() or (None,))[0] is None:
        do(q.enable_db_ct(db, retention, unit))  # off (not merely invisible to this login)
    for side in sides:
        obj = q.side_name(side)
        if cur.execute(q.static("table_pk").sql, obj).fetchone() is None:
            raise SqlServerError(f"{side.qualified} has no primary key; change tracking needs one")
        if cur.execute(q.static("table_ct_state").sql, obj).fetchone() is None:
            do(q.enable_table_ct(side))
    return ran


def _disable(cur: Any, side: Side) -> list[str]:
    """Table-level CT off (its tracking data goes with it). The database setting stays:
    other tables may use it; a DBA turns it off with disable_db_ct once no table does."""
    if cur.execute(q.static("table_ct_state").sql, q.side_name(side)).fetchone() is None:
        return []
    r = q.disable_table_ct(side)
    cur.execute(r.sql)
    return [r.sql]


# --- blocking entry points for the CLI (validate / install / uninstall) -------------------------


def _autocommit(peer: Peer, driver: Any = None, timeouts: Timeouts | None = None) -> Any:
    """A short-lived autocommit connection: ALTER DATABASE cannot run in a transaction.
    With the query timeout: ALTER DATABASE ... ALLOW_SNAPSHOT_ISOLATION ON waits for every
    open transaction, so install fails with HYT00 instead of hanging (issue 18 item 17)."""
    pyodbc = driver or import_pyodbc()
    conn_str = with_app_name(odbc_connection_string(peer.dsn))
    check_driver(pyodbc, conn_str)
    return connect(pyodbc, conn_str, True, timeouts or Timeouts())


def read_table_sync(peer: Peer, side: Side, *, driver: Any = None) -> Table | None:
    """catalog.Table of one SQL Server table (None if absent), for link validation."""
    cn = _autocommit(peer, driver)
    try:
        return read_catalog(cn.cursor(), side)[0]
    finally:
        cn.close()


def install_capture(peer: Peer, side: Side, *, retention: int = DEFAULT_RETENTION_DAYS,
                    unit: str = "DAYS", driver: Any = None, notes: list[str] | None = None,
                    timeouts: Timeouts | None = None) -> list[str]:
    """Snapshot isolation + change tracking for one source table; idempotent (§1.1).
    Returns the ALTER statements it had to run (none when all was on already); warnings
    (a shorter existing retention) go to `notes`."""
    cn = _autocommit(peer, driver, timeouts)
    try:
        return _enable(cn.cursor(), [side], retention, unit, notes)
    finally:
        cn.close()


def uninstall_capture(peer: Peer, side: Side, *, driver: Any = None) -> list[str]:
    """Change tracking off for one table (the database-level setting is left on)."""
    cn = _autocommit(peer, driver)
    try:
        return _disable(cn.cursor(), side)
    finally:
        cn.close()


def _result(cur: Any) -> list[Any]:
    """Rows of the first result set of a batch (skipping any non-row results)."""
    while cur.description is None:
        if not cur.nextset():
            return []
    return cur.fetchall()


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def _dedupe(objs: list[dict[str, Any]], nkeys: int) -> list[dict[str, Any]]:
    """Last row per key wins: a duplicate key would fail the @src primary key (§2.1)."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for obj in objs:
        seen[tuple(obj[f"c{i}"] for i in range(nkeys))] = obj
    return list(seen.values())


def _encode(table: Table, cols: list[str], rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n, row in enumerate(rows):
        obj = {}
        for i, c in enumerate(cols):
            try:
                obj[f"c{i}"] = types.to_transport(row.get(c), table.columns[c].type)
            except ValueError as e:
                raise BadRow(n, c, str(e)) from None
        out.append(obj)
    return out


def _param(value: Any, spelled: str) -> Any:
    """A key value bound to a typed DECLARE: strings for uuid/time types (§2.5)."""
    if value is None or isinstance(value, bool | int | bytes):
        return value
    return types.to_transport(value, spelled)
