"""The drains of links with a SQL Server side (engine/sqlserver/drain.py), without a SQL Server.

The Postgres side is real (new_db + the sync migrations + the capture trigger).
The SQL Server side is `FakeMssql`, a TEST DOUBLE OF THE ADAPTER (MssqlPeer's
async interface), not of a database: it keeps rows as the Python values the
adapter returns, imitates change tracking's net changes, context filtering,
min-valid version and database identity, and encodes every batch with the
adapter's own `_encode` (so values are checked exactly as the real one would
send them to OPENJSON). What it cannot prove (T-SQL, pyodbc, the driver) is
covered by tests/test_mssql_live.py where a server is reachable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import psycopg
import pytest

from syncbridge.engine import catalog, config, config_file, errors, faults, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.migrate import migrate
from syncbridge.engine.postgres import capture
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.sqlserver import capture as ctcap
from syncbridge.engine.sqlserver import changes as chg
from syncbridge.engine.sqlserver import convert, ct_to_pg, pg_to_ct
from syncbridge.engine.sqlserver import drain as mssql_drain
from syncbridge.engine.sqlserver import peer as mp
from syncbridge.engine.sqlserver import types as mssql_types
from syncbridge.engine.sqlserver.convert import pg_object, pg_value
from syncbridge.engine.sqlserver.ct_to_pg import CtToPgDrain
from syncbridge.engine.sqlserver.drain import make_drain
from syncbridge.engine.sqlserver.pg_to_ct import PgToCtDrain

LINK = "items"
# (column, Postgres type, SQL Server type); id and k2 are the key.
COLUMNS = [
    ("id", "uuid", "uniqueidentifier"),
    ("k2", "integer", "int"),
    ("name", "text", "nvarchar(max)"),
    ("amount", "numeric(20,6)", "decimal(20,6)"),
    ("paid_at", "timestamp with time zone", "datetimeoffset(6)"),
    ("seen_at", "timestamp without time zone", "datetime2(6)"),
    ("blob", "bytea", "varbinary(max)"),
    ("doc", "jsonb", "nvarchar(max)"),
    ("flag", "boolean", "bit"),
    ("score", "double precision", "float"),
    ("born", "date", "date"),
    ("slot", "time without time zone", "time(6)"),
    ("parent", "integer", "int"),
]
KEY = ("id", "k2")
PG_SCHEMA = """
create table parents (id int primary key);
create table items (
    id uuid not null, k2 integer not null check (k2 >= 0), name text, amount numeric(20,6),
    paid_at timestamptz, seen_at timestamp, blob bytea, doc jsonb, flag boolean,
    score double precision, born date, slot time, parent integer references parents (id),
    primary key (id, k2)
);
"""
U = [uuid.UUID(int=i) for i in range(100)]
AMOUNT = Decimal("12345678901234.123456")
PAID = dt.datetime(2024, 5, 1, 12, 0, 0, 654321, dt.timezone(dt.timedelta(hours=2)))
SEEN = dt.datetime(2024, 5, 1, 10, 0, 0, 123456)
NAME = "Zoë Ångström 患者 😀 \"quoted\" \\ back"


class FakeOdbcError(Exception):
    """Looks like a pyodbc error to errors.is_odbc_error: (SQLSTATE, message)."""


FakeOdbcError.__module__ = "pyodbc"


def ms_row(i: int, **over: Any) -> dict[str, Any]:
    """A SQL Server row as MssqlPeer.read_changes returns it (to_postgres values)."""
    row = {"id": U[i], "k2": i, "name": NAME, "amount": AMOUNT, "paid_at": PAID, "seen_at": SEEN,
           "blob": b"\x00\x01\\x\xfe\xff", "doc": '{"b": [1, "é"], "a": 1.10}', "flag": True,
           "score": 0.1, "born": dt.date(1, 1, 1), "slot": dt.time(23, 59, 59, 999999),
           "parent": None}
    row.update(over)
    return row


class FakeMssql:
    """In-memory stand-in for one MssqlPeer (see the module docstring): the adapter's
    async surface with change tracking's semantics, and switches to make it fail."""

    def __init__(self, shape: LinkShape, side: str = "b") -> None:
        self.shape, self.side = shape, side
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.changed: dict[tuple, tuple[int, bytes | None]] = {}  # key -> (version, context)
        self.version = 10
        self.min_valid = 0
        self.identity = "3f2a0000-0000-0000-0000-000000000001"
        self.applied_ids: set[uuid.UUID] = set()
        self.sent: list[dict[str, Any]] = []  # the OPENJSON payloads, decoded
        self.apply_calls = 0
        self.reject: dict[tuple, Exception] = {}  # key -> error an upsert of it raises
        self.fail_after_commit = 0  # > 0: raise a link failure after committing
        self.meta_reads = 0
        self.prunes: list[int] = []
        self.records: list[int] = []  # versions recorded on the source before a cursor store
        self.polls = self.reads = 0
        self.altered = 1  # sys.objects.modify_date stand-in; bump to simulate ALTER TABLE
        self.table_now: catalog.Table | None = None  # what read_table returns after it
        self.page_size = 0  # > 0: read_changes pages like the adapter (CHANGE_PAGE_ROWS)
        self.page_reads: list[bool] = []  # sink= of each read_keys_page (item 2: writer)
        self.bases: dict[str, tuple[str | None, bool]] = {}  # a-key (sorted JSON) -> base
        self.resends: list[str] = []  # [sync].[resend] keys of this side

    def key(self, row: dict[str, Any]) -> tuple:
        return tuple(row[k] for k in self.shape.key_cols(self.side))

    # what an application does on SQL Server (context NULL)

    def write(self, row: dict[str, Any], ctx: bytes | None = None) -> None:
        self.version += 1
        self.rows[self.key(row)] = dict(row)
        self.changed[self.key(row)] = (self.version, ctx)

    def remove(self, key: tuple, ctx: bytes | None = None) -> None:
        self.version += 1
        self.rows.pop(key, None)
        self.changed[key] = (self.version, ctx)

    def truncate(self) -> None:
        """Not tracked; the table's CT data is reset and its min valid version raised."""
        self.rows.clear()
        self.changed.clear()
        self.version += 1
        self.min_valid = self.version

    # the adapter's surface

    async def read_table(self, side: Any) -> catalog.Table:
        self.meta_reads += 1
        return self.table_now or self.shape.table(self.side)

    async def ensure_ready(self, side: Any, **_: Any) -> list[Any]:
        self.meta_reads += 1
        return []

    async def prune_applied(self, days: int) -> None:
        self.prunes.append(days)

    async def record_client_version(self, link: str, source_side: str, version: int) -> None:
        self.records.append(version)

    async def poll_version(self, side: Any) -> tuple[int, int, int]:
        self.polls += 1
        return self.version, self.min_valid, self.altered

    async def read_changes(self, shape: LinkShape, side: str, cursor: chg.CtCursor | None,
                           ctx: bytes, *, after: dict[str, Any] | None = None,
                           upto: int | None = None, limit: int = 0) -> chg.ChangeSet:
        self.reads += 1
        upto = self.version if upto is None else upto
        new = chg.CtCursor(upto, self.identity)
        if (cursor is None or cursor.version < self.min_valid or cursor.version > self.version
                or cursor.db_identity != self.identity):
            return chg.ChangeSet([], [], new, True)
        ups, dels = [], []
        # like the adapter: key order, changes in (cursor, upto], after the previous page
        kcols = shape.key_cols(side)
        start = None if after is None else tuple(after[k] for k in kcols)
        window = sorted(k for k, (v, c) in self.changed.items()
                        if cursor.version < v <= upto and c != ctx
                        and (start is None or k > start))
        page = window[: self.page_size] if self.page_size else window
        for key in page:
            if key in self.rows:
                ups.append(dict(self.rows[key]))
            else:
                dels.append(dict(zip(kcols, key, strict=True)))
        more = (dict(zip(kcols, page[-1], strict=True))
                if self.page_size and len(page) == self.page_size else None)
        return chg.ChangeSet(ups, dels, new, False, more, self.min_valid)

    async def read_keys_page(self, shape: LinkShape, side: str, after: dict[str, Any] | None,
                             limit: int = 1000, *, values: bool = False,
                             sink: bool = False) -> list[dict[str, Any]]:
        self.page_reads.append(sink)
        keys = shape.key_cols(side)
        start = None if after is None else tuple(after[k] for k in keys)
        out = []
        for key in sorted(self.rows):
            if start is None or key > start:
                row = self.rows[key]
                out.append(dict(row) if values else {k: row[k] for k in keys})
        return out[:limit]

    async def read_rows(self, shape: LinkShape, side: str,
                        keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for k in keys:  # like OPENJSON: key values may come as text
            key = tuple(uuid.UUID(str(k[c])) if c == "id" else int(k[c])
                        for c in shape.key_cols(side))
            if key in self.rows:
                out.append(dict(self.rows[key]))
        return out

    async def applied(self, batch_id: uuid.UUID) -> bool:
        return batch_id in self.applied_ids

    async def apply_batch(self, shape: LinkShape, side: str, batch_id: uuid.UUID,
                          upserts: list[dict[str, Any]], deletes: list[dict[str, Any]],
                          ctx: bytes, *, signals: int | None = None,
                          cursor: chg.CtCursor | None = None) -> mp.ApplyCounts:
        table = shape.table(side)
        # BadRow, as the adapter raises
        rows = convert.encode_rows(table, shape.cols(side), upserts)
        dels = convert.encode_rows(table, shape.key_cols(side), deletes)
        self.apply_calls += 1
        if batch_id in self.applied_ids:
            raise FakeOdbcError("23000", "Violation of PRIMARY KEY constraint (2627)")
        for row in upserts:
            if self.key(row) in self.reject:
                raise self.reject[self.key(row)]
        # "commit"
        self.sent.append({"batch": batch_id, "rows": json.loads(convert.json_text(rows)),
                          "dels": json.loads(convert.json_text(dels)), "ctx": ctx})
        counts = [0, 0, 0]
        for row in upserts:
            counts[0 if self.key(row) in self.rows else 1] += 1
            self.write(row, ctx)
        for key in deletes:  # like OPENJSON: key values may come as text
            k = tuple(uuid.UUID(str(key[c])) if c == "id" else int(key[c])
                      for c in shape.key_cols(side))
            if k in self.rows:
                counts[2] += 1
                self.remove(k, ctx)
        self.applied_ids.add(batch_id)
        if self.fail_after_commit:
            self.fail_after_commit -= 1
            raise FakeOdbcError("08S01", "Communication link failure")
        return mp.ApplyCounts(*counts)

    # two-way links: [sync].[row_state] and [sync].[resend] of this peer

    async def apply_two_way(self, shape: LinkShape, side: str, batch_id: uuid.UUID,
                            keys: list[tuple[str, dict[str, Any]]], settle: Any, ctx: bytes, *,
                            signals: int) -> mp.ApplyCounts:
        """Like the adapter: rows and bases read first (under lock: nothing runs in
        between here), settle decides, then rows, bases and resends commit together."""
        found = []
        for ka, k in keys:
            row = self.rows.get(self.key(k))
            base = self.bases.get(json.dumps(json.loads(ka), sort_keys=True))
            found.append(chg.SinkState(dict(row) if row else None,
                                       base[0] if base else None,
                                       base[1] if base else True, base is not None))
        batch = await settle(found)
        counts = await self.apply_batch(shape, side, batch_id, list(batch.upserts),
                                        list(batch.deletes), ctx, signals=signals)
        self.set_bases(batch.states)
        self.resends += [k for k in batch.resend if k not in self.resends]
        return counts

    def set_bases(self, states: Any) -> None:
        for ka, image in states:
            self.bases[json.dumps(json.loads(ka), sort_keys=True)] = (image, True)

    async def write_states(self, link: str, states: Any) -> None:
        self.set_bases(states)

    async def execute(self, name: str, *params: Any) -> list[Any]:
        if name == "state_forget":
            self.bases.clear()
        elif name == "resend_read":
            return [(k,) for k in self.resends[: params[0]]]
        elif name == "resend_done":
            done = set(json.loads(params[2]))
            self.resends = [k for k in self.resends if k not in done]
        elif name == "resend_request":
            self.resends += [k for k in json.loads(params[2]) if k not in self.resends]
        return []

    async def close(self) -> None:
        pass


# --- fixtures ----------------------------------------------------------------------------------


def raw_config(dsn: str, direction: str = "both") -> dict[str, Any]:
    return {
        "hub": "portal",
        "peers": {"portal": {"dialect": "postgres", "dsn": dsn},
                  "clinic": {"dialect": "sqlserver", "dsn": "mssql://sa:pw@nowhere:1433/clinic"}},
        "links": [{"name": LINK, "a": {"peer": "portal", "table": "public.items"},
                   "b": {"peer": "clinic", "table": "dbo.items"}, "key": list(KEY),
                   "direction": direction}],
    }


def ms_table() -> catalog.Table:
    cols = {n: catalog.Column(n, ms, n not in KEY) for n, _, ms in COLUMNS}
    return catalog.Table("dbo", "items", cols, KEY)


@pytest.fixture
def portal(new_db) -> tuple[str, LinkShape]:
    """A migrated Postgres peer with the items table and side a's capture installed."""
    dsn = new_db("portal")
    raw = raw_config(dsn)
    migrate(config.parse({"peers": {"portal": raw["peers"]["portal"]}}))
    cfg = config.parse(raw)
    link = cfg.links[LINK]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PG_SCHEMA)
        a = catalog.read_pg_table(conn, link.a)
        shape = catalog.shape(link, a, ms_table(),
                              check_types=mssql_types.type_checker("postgres", "sqlserver"))
        capture.install(conn, shape, "a")
    return dsn, shape


Body = Callable[[asyncpg.Pool, LinkShape, FakeMssql], Awaitable[None]]


def run(portal: tuple[str, LinkShape], body: Body) -> None:
    dsn, shape = portal

    async def main() -> None:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4,
                                         server_settings={"TimeZone": "UTC"})
        try:
            await body(pool, shape, FakeMssql(shape))
        finally:
            await pool.close()

    asyncio.run(main())


async def pg_rows(pool: asyncpg.Pool) -> dict[tuple, dict[str, Any]]:
    rows = await pool.fetch("select * from items")
    return {(r["id"], r["k2"]): dict(r) for r in rows}


async def cursor_of(pool: asyncpg.Pool) -> tuple[int, str] | None:
    r = await pool.fetchrow("select version, db_identity from sync.ct_cursor "
                            "where link = $1 and source_side = 'b'", LINK)
    return (r["version"], r["db_identity"]) if r else None


async def queued(pool: asyncpg.Pool, side: str = "a") -> int:
    return await pool.fetchval("select count(*) from sync.queue where link = $1 and side = $2",
                               LINK, side)


def assert_same(pg: dict[str, Any], ms: dict[str, Any]) -> None:
    for col, value in ms.items():
        got = pg[col]
        if col == "doc" and value is not None:
            assert json.loads(got, parse_float=Decimal) == json.loads(value, parse_float=Decimal)
        else:
            assert got == value, col
    if pg["paid_at"] is not None:
        assert pg["paid_at"].utcoffset() == dt.timedelta(0)  # same instant, read back in UTC


# --- values to Postgres jsonb text ---------------------------------------------------------------


def test_pg_value_is_exact_text() -> None:
    assert pg_value(AMOUNT, "numeric(20,6)") == "12345678901234.123456"
    assert pg_value(Decimal("1E+3"), "numeric") == "1000"
    assert pg_value(2**63 - 1, "bigint") == "9223372036854775807"
    assert pg_value(PAID, "timestamptz") == '"2024-05-01T12:00:00.654321+02:00"'
    assert pg_value(dt.datetime(2024, 1, 1), "timestamp") == '"2024-01-01T00:00:00.000000"'
    assert pg_value(dt.time(1, 2, 3), "time") == '"01:02:03.000000"'
    assert pg_value(b"\x00\xff", "bytea") == '"\\\\x00ff"'
    assert pg_value(U[1], "uuid") == '"00000000-0000-0000-0000-000000000001"'
    assert pg_value("Zoë 😀", "text") == '"Zoë 😀"'
    assert json.loads(pg_value('{"a": 1.10}', "jsonb")) == '{"a": 1.10}', "its text, digits kept"
    assert json.loads(pg_value("null", "jsonb")) == "null", "JSON null is not SQL NULL"
    assert pg_value(0.1, "double precision") == "0.1"
    assert pg_value(True, "boolean") == "true"
    for bad, typ in (("a\x00b", "text"), ("{nope", "jsonb")):
        with pytest.raises(ValueError):
            pg_value(bad, typ)
    assert json.loads(pg_object(["we\"ird"], [AMOUNT], ["numeric"]),
                      parse_float=Decimal) == {'we"ird': AMOUNT}


def test_pg_values_round_trip_through_postgres(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        cols = shape.cols("a")
        types = [shape.a.columns[c].type for c in cols]
        row = ms_row(1)
        payload = "[" + pg_object(cols, [row[c] for c in cols], types) + "]"
        sql = pg_sql.render(shape, "b", "a").upsert
        await pool.execute(sql, payload)
        assert_same((await pg_rows(pool))[(U[1], 1)], row)

    run(portal, body)


# --- SQL Server source -> Postgres sink -----------------------------------------------------------


def ct_drain(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql, **kw: Any) -> CtToPgDrain:
    return CtToPgDrain(shape, "b", fake, pool, pool, **kw)  # type: ignore[arg-type]


def test_ct_first_run_copies_then_applies_changes_with_the_cursor(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        for i in range(1, 4):
            fake.write(ms_row(i))
        d = ct_drain(pool, shape, fake, page_rows=2)
        assert await d.recover() == 0 and fake.meta_reads == 1
        assert await d.drain_once() == 3, "no cursor yet: the whole table is sent"
        assert await cursor_of(pool) == (fake.version, fake.identity)
        got = await pg_rows(pool)
        for i in range(1, 4):
            assert_same(got[(U[i], i)], ms_row(i))
        note = await pool.fetchval("select last_error from sync.status where link = $1 "
                                   "and direction = 'b_to_a'", LINK)
        assert note.startswith("resync done") and "first run" in note
        assert await d.drain_once() == 0, "idle: poll equals the cursor"
        assert await d.depth() == (0, None)

        fake.write(ms_row(1, name="neu", amount=Decimal("-0.000001")))
        fake.remove((U[2], 2))
        fake.write(ms_row(4, blob=None, paid_at=None, doc=None))
        assert (await d.depth())[0] == 0
        assert await d.drain_once() == 3
        got = await pg_rows(pool)
        assert set(got) == {(U[1], 1), (U[3], 3), (U[4], 4)}
        assert got[(U[1], 1)]["name"] == "neu"
        assert got[(U[1], 1)]["amount"] == Decimal("-0.000001")
        assert_same(got[(U[4], 4)], ms_row(4, blob=None, paid_at=None, doc=None))
        assert await cursor_of(pool) == (fake.version, fake.identity)
        assert await queued(pool) == 0, "the bridge's writes are not captured back (echo)"
        applied = await pool.fetchval("select sum(upserts + deletes) from sync.applied_batches "
                                      "where link = $1 and source_side = 'b'", LINK)
        assert applied == 6
        total = await pool.fetchval("select applied_total from sync.link_state "
                                    "where link = $1 and source_side = 'b'", LINK)
        assert total == 6

    run(portal, body)


def test_ct_echo_suppression_and_local_writes_still_captured(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = ct_drain(pool, shape, fake)
        await d.drain_once()  # first run: empty copy, cursor stored
        fake.write(ms_row(1))
        await d.drain_once()
        assert await queued(pool) == 0
        await pool.execute("update items set name = 'local' where k2 = 1")
        assert await queued(pool) == 1, "an application write on Postgres is captured"

    run(portal, body)


def test_ct_cursor_and_rows_commit_together(portal, monkeypatch) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = ct_drain(pool, shape, fake)
        await d.drain_once()
        start = await cursor_of(pool)
        fake.write(ms_row(1))

        # a failure inside the sink transaction: neither the row nor the cursor lands
        real = ct_to_pg.SQL

        class Broken:
            def __getitem__(self, name: str) -> str:
                return "select broken(" if name == "ct_cursor_write" else real[name]

        monkeypatch.setattr(ct_to_pg, "SQL", Broken())
        with pytest.raises(asyncpg.PostgresError):
            await d.drain_once()
        assert await pg_rows(pool) == {} and await cursor_of(pool) == start
        monkeypatch.setattr(ct_to_pg, "SQL", real)

        # a crash right after the sink commit: both are there, nothing is read twice
        def crash(point: str) -> None:
            if point == "after_sink_commit":
                raise RuntimeError("killed")

        monkeypatch.setattr(faults, "hit", crash)
        with pytest.raises(RuntimeError):
            await d.drain_once()
        monkeypatch.undo()
        assert set(await pg_rows(pool)) == {(U[1], 1)}
        assert await cursor_of(pool) == (fake.version, fake.identity)
        assert await d.drain_once() == 0
        assert await pool.fetchval("select count(*) from sync.applied_batches "
                                   "where signals > 0") == 1

    run(portal, body)


def test_ct_large_change_sets_commit_in_chunks_with_the_cursor_last(portal, monkeypatch) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        small = dataclasses.replace(shape, link=dataclasses.replace(shape.link, batch_size=2))
        d = ct_drain(pool, small, fake)
        await d.drain_once()
        start = await cursor_of(pool)
        for i in range(1, 6):
            fake.write(ms_row(i))
        commits = []

        def crash(point: str) -> None:
            commits.append(point)
            if len(commits) == 2:
                raise RuntimeError("killed after the second chunk")

        monkeypatch.setattr(faults, "hit", crash)
        with pytest.raises(RuntimeError):
            await d.drain_once()
        monkeypatch.undo()
        assert len(await pg_rows(pool)) == 4 and await cursor_of(pool) == start
        assert await d.drain_once() == 5, "read again from the old cursor"
        assert len(await pg_rows(pool)) == 5
        assert await cursor_of(pool) == (fake.version, fake.identity)
        assert await pool.fetchval("select count(*) from sync.applied_batches "
                                   "where signals > 0") == 2 + 3

    run(portal, body)


def test_ct_resync_after_truncate_sweeps_the_sink_but_spares_queued_keys(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        for i in range(1, 6):
            fake.write(ms_row(i))
        d = ct_drain(pool, shape, fake, page_rows=2)
        await d.drain_once()
        # a local Postgres insert not yet sent to SQL Server (its signal is queued)
        await pool.execute("insert into items (id, k2, name) values ($1, 50, 'local')", U[50])
        fake.truncate()  # TRUNCATE on SQL Server: not tracked, min valid version raised
        fake.write(ms_row(7))
        assert await d.drain_once() >= 1
        got = await pg_rows(pool)
        assert set(got) == {(U[7], 7), (U[50], 50)}, "gone keys deleted, queued local key kept"
        assert await cursor_of(pool) == (fake.version, fake.identity)
        note = await pool.fetchval("select last_error from sync.link_state "
                                   "where link = $1 and source_side = 'b'", LINK)
        assert "resync done" in note and "MIN_VALID_VERSION" in note and "1 rows sent" in note

        fake.identity = "3f2a0000-0000-0000-0000-0000000000ff"  # restored from a backup
        fake.write(ms_row(8))
        await d.drain_once()
        assert (U[8], 8) in await pg_rows(pool)
        assert (await cursor_of(pool))[1] == fake.identity

    run(portal, body)


def test_ct_bad_rows_are_dead_lettered_and_fk_misses_retried(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = ct_drain(pool, shape, fake)
        await d.drain_once()
        for i in range(1, 6):
            fake.write(ms_row(i))
        fake.write(ms_row(6, k2=6, name="nul\x00here"))  # Postgres text cannot hold NUL
        fake.write(ms_row(7, parent=99))  # foreign key: parent not there yet
        fake.rows[(U[8], 8)] = ms_row(8)
        fake.rows[(U[8], 8)]["k2"] = 8
        fake.write({**ms_row(9), "k2": 9, "amount": Decimal("1"), "name": "ok"})
        bad_check = ms_row(10)
        bad_check["id"], bad_check["k2"] = U[10], -1  # violates check (k2 >= 0) on Postgres
        fake.write(bad_check)
        await d.drain_once()
        got = await pg_rows(pool)
        assert {k[1] for k in got} == {1, 2, 3, 4, 5, 9}
        dead = {json.loads(r["key"])["k2"]: r["error"] for r in await pool.fetch(
            "select key::text as key, error from sync.dead_letter where status = 'open'")}
        assert set(dead) == {6, 7, -1}
        assert dead[7].startswith("[23503]") and dead[-1].startswith("[23514]")
        assert "NUL" in dead[6]
        assert await cursor_of(pool) == (fake.version, fake.identity), "the rest flowed on"

        # the parent arrives; the foreign-key miss is read again after its backoff
        await pool.execute("insert into parents values (99)")
        await pool.execute("update sync.dead_letter set last_seen = now() - interval '1 hour'")
        await d.drain_once()
        assert (U[7], 7) in await pg_rows(pool)
        status = {json.loads(r["key"])["k2"]: r["status"] for r in await pool.fetch(
            "select key::text as key, status from sync.dead_letter")}
        assert status == {6: "open", 7: "closed", -1: "open"}

        # an operator retry after fixing the data at the source
        fake.write({**bad_check, "k2": -1, "name": None})
        fake.rows.pop((U[10], -1))
        await pool.execute("select sync.retry_dead($1)", LINK)
        await d.drain_once()
        status = {json.loads(r["key"])["k2"]: r["status"] for r in await pool.fetch(
            "select key::text as key, status from sync.dead_letter")}
        assert status[-1] == "closed", "a key gone at the source deletes cleanly"

    run(portal, body)


# --- Postgres source -> SQL Server sink -----------------------------------------------------------


def pg_drain(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql, **kw: Any) -> PgToCtDrain:
    return PgToCtDrain(shape, "a", pool, fake, pool, **kw)  # type: ignore[arg-type]


INSERT = ("insert into items (id, k2, name, amount, paid_at, seen_at, blob, doc, flag, score, "
          "born, slot) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")


async def pg_insert(pool: asyncpg.Pool, i: int, **over: Any) -> None:
    r = ms_row(i, **over)
    await pool.execute(INSERT, r["id"], r["k2"], r["name"], r["amount"], r["paid_at"],
                       r["seen_at"], r["blob"], r["doc"], r["flag"], r["score"], r["born"],
                       r["slot"])


def test_pg_to_ct_claims_applies_exactly_and_finishes(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        for i in range(1, 4):
            await pg_insert(pool, i)
        d = pg_drain(pool, shape, fake)
        assert await d.recover() == 0
        depth, since = await d.depth()
        assert depth == 3 and isinstance(since, dt.datetime)
        assert await d.drain_once() == 3
        assert await queued(pool) == 0
        assert set(fake.rows) == {(U[i], i) for i in range(1, 4)}
        sent = fake.sent[-1]
        assert sent["ctx"] == ctcap.echo_context(LINK), "tagged so this link's CT read skips it"
        c = {c: f"c{i}" for i, c in enumerate(shape.cols("b"))}
        obj = next(o for o in sent["rows"] if o[c["k2"]] == "1")
        assert obj[c["amount"]] == "12345678901234.123456"
        assert obj[c["paid_at"]] == "2024-05-01T10:00:00.654321+00:00"
        assert obj[c["seen_at"]] == "2024-05-01T10:00:00.123456"
        assert obj[c["blob"]] == "00015c78feff"
        assert obj[c["name"]] == NAME
        assert json.loads(obj[c["doc"]]) == {"a": 1.10, "b": [1, "é"]}
        assert obj[c["slot"]] == "23:59:59.999999" and obj[c["born"]] == "0001-01-01"
        assert fake.rows[(U[1], 1)]["amount"] == AMOUNT

        # the other direction reads nothing back: the writes carry this link's context
        ct = ct_drain(pool, shape, fake)
        await pool.execute("insert into sync.ct_cursor (link, source_side, version, db_identity)"
                           " values ($1, 'b', 10, $2)", LINK, fake.identity)
        assert await ct.drain_once() == 0
        assert await cursor_of(pool) == (fake.version, fake.identity)

        await pool.execute("update items set k2 = 20 where k2 = 2")  # key change
        await pool.execute("delete from items where k2 = 3")
        assert await d.drain_once() == 3
        assert set(fake.rows) == {(U[1], 1), (U[2], 20)}
        await pool.execute("truncate items")
        await pg_insert(pool, 5)
        await d.drain_once()
        assert set(fake.rows) == {(U[5], 5)}, "TRUNCATE empties the sink, later rows stay"
        batches = await pool.fetchval("select count(*) from sync.queue")
        assert batches == 0

    run(portal, body)


def test_pg_to_ct_recovery_asks_the_sink(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        def Q(name: str) -> str:  # noqa: N802 - queue.sql by name, as the drains read it
            return sqlfiles.query("postgres/queue.sql", name)

        d = pg_drain(pool, shape, fake)
        await pg_insert(pool, 1)
        lost = uuid.uuid4()  # claimed, then the bridge died before applying
        await pool.fetch(Q("claim"), LINK, "a", 100, lost)
        await pg_insert(pool, 2)
        done = uuid.uuid4()  # claimed and applied, then died before the source cleanup
        await pool.fetch(Q("claim"), LINK, "a", 100, done)
        await fake.apply_batch(shape, "b", done, [{c: v for c, v in ms_row(2).items()
                                                   if c != "parent"} | {"parent": None}], [],
                               ctcap.echo_context(LINK))
        calls = fake.apply_calls
        assert await d.recover() == 2
        assert fake.apply_calls == calls + 1, "only the unapplied batch is applied"
        assert lost in fake.applied_ids
        assert await queued(pool) == 0
        assert set(fake.rows) == {(U[1], 1), (U[2], 2)}

    run(portal, body)


def test_pg_to_ct_transient_failure_after_commit_is_not_applied_twice(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = pg_drain(pool, shape, fake)
        await pg_insert(pool, 1)
        fake.fail_after_commit = 1
        with pytest.raises(FakeOdbcError) as e:
            await d.drain_once()
        assert errors.is_transient(e.value), "the daemon retries it"
        calls = fake.apply_calls
        assert await d.drain_once() == 0
        assert fake.apply_calls == calls and await queued(pool) == 0
        assert set(fake.rows) == {(U[1], 1)}

    run(portal, body)


def test_pg_to_ct_bad_rows_isolated_and_fk_deferred(portal) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = pg_drain(pool, shape, fake, max_attempts=3)
        for i in range(1, 9):
            await pg_insert(pool, i, score=float("nan") if i == 3 else 0.5)
        fake.reject[(U[5], 5)] = FakeOdbcError(
            "23000", "[23000] Violation of UNIQUE KEY constraint 'uq'. (2627)")
        fake.reject[(U[6], 6)] = convert.BadRow(0, "name", "refused by the adapter")
        fake.reject[(U[7], 7)] = FakeOdbcError(
            "23000", "[23000] The INSERT statement conflicted with the FOREIGN KEY constraint "
            "\"fk\". (547)")
        assert await d.drain_once() == 8
        assert set(fake.rows) == {(U[i], i) for i in (1, 2, 4, 8)}
        dead = {json.loads(r["key"])["k2"]: r["error"] for r in await pool.fetch(
            "select key::text as key, error from sync.dead_letter")}
        assert set(dead) == {3, 5, 6}
        assert "refused by the adapter" in dead[6]
        assert "NaN" in dead[3] or "nan" in dead[3]
        assert "(2627)" in dead[5]
        q = await pool.fetch("select key ->> 'k2' as k2, attempts, retry_at > now() as later "
                             "from sync.queue")
        assert [(r["k2"], r["attempts"], r["later"]) for r in q] == [("7", 1, True)], \
            "the foreign-key miss is re-queued with a delay"
        main = [b for b in fake.sent if b["batch"] in fake.applied_ids]
        assert len(main) >= 3, "halves went as sub-batches"
        claimed = await pool.fetchval("select count(*) from sync.queue where batch_id is not null")
        assert claimed == 0

        # after max_attempts the miss becomes a dead letter
        for _ in range(3):
            await pool.execute("update sync.queue set retry_at = null")
            await d.drain_once()
        dead = {json.loads(r["key"])["k2"] for r in await pool.fetch(
            "select key::text as key from sync.dead_letter")}
        assert dead == {3, 5, 6, 7} and await queued(pool) == 0

    run(portal, body)


# --- the factory and the error plumbing -----------------------------------------------------------


def test_make_drain_builds_one_peer_per_name(portal, caplog) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        cfg = config.parse(raw_config("postgresql://unused"))
        peers: dict[str, Any] = {}
        with caplog.at_level(logging.WARNING, "syncbridge.mssql_drain"):
            ab = make_drain(shape, "a", "b", cfg, {"portal": pool}, peers, pool)
            ba = make_drain(shape, "b", "a", cfg, {"portal": pool}, peers, pool)
        assert isinstance(ab, PgToCtDrain) and isinstance(ba, CtToPgDrain)
        assert list(peers) == ["clinic"] and ab.mssql is ba.mssql
        assert ba.poll_interval == config_file.DEFAULTS["ct_poll_interval"]
        assert ab.name == "items:a->b" and ba.name == "items:b->a"
        assert ab.two_way and ba.two_way, "two-way links are conflict-checked (issue 18/15)"
        assert not [r for r in caplog.records if "no_conflict_check" in r.getMessage()]

        raw = raw_config("postgresql://unused")
        raw["peers"]["portal"] = {"dialect": "sqlserver", "dsn": "mssql://x/y"}
        raw["peers"]["hub"] = {"dialect": "postgres", "dsn": "postgresql://unused"}
        raw["hub"] = "hub"
        with pytest.raises(config.ConfigError, match="SQL Server to SQL Server"):
            make_drain(shape, "a", "b", config.parse(raw), {}, {}, pool)

    run(portal, body)


def test_every_policy_is_accepted_on_two_way_links_with_sql_server() -> None:
    for policy in ("manual", "merge", "b_wins", "function:public.pick"):
        raw = raw_config("postgresql://unused")
        raw["links"][0]["conflict"] = policy
        assert config.parse(raw).links[LINK].conflict == policy
    raw["links"][0]["direction"] = "a_to_b"
    config.parse(raw)


def test_odbc_errors_are_classified_without_pyodbc() -> None:
    assert errors.is_transient(FakeOdbcError("08S01", "Communication link failure"))
    assert errors.is_transient(FakeOdbcError("40001", "deadlock victim (1205)"))
    assert not errors.is_transient(FakeOdbcError("23000", "duplicate (2627)"))
    assert not errors.is_transient(ValueError("08S01"))
    assert pg_to_ct.row_error(FakeOdbcError("23000", "duplicate (2627)"))
    assert pg_to_ct.row_error(convert.BadRow(0, "x", "NaN"))
    assert not pg_to_ct.row_error(FakeOdbcError("42S02", "Invalid object (208)"))
    assert not pg_to_ct.row_error(FakeOdbcError("08S01", "link failure"))


def test_the_daemon_drains_both_directions_through_make_drain(portal, monkeypatch) -> None:
    """bridge/daemon.py end to end (leadership, drain loop, polling, stats) with the adapter
    double in place of MssqlPeer and the catalogs given (no SQL Server to validate against)."""
    from syncbridge.bridge import daemon

    dsn, shape = portal
    raw = raw_config(dsn)
    raw["bridge"] = {"ct_poll_interval": 0.05, "stats_interval": 0.1}
    cfg = config.parse(raw)
    fake = FakeMssql(shape)
    fake.write(ms_row(1))
    monkeypatch.setattr(mssql_drain, "MssqlPeer", lambda peer, **_: fake)
    monkeypatch.setattr(daemon, "shapes", lambda c: {LINK: shape})

    async def main() -> None:
        bridge = daemon.Bridge(cfg)
        task = asyncio.create_task(bridge.run())
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2,
                                         server_settings={"TimeZone": "UTC"})

        async def until(pred: Callable[[], Awaitable[bool]], what: str) -> None:
            for _ in range(300):
                if task.done():
                    task.result()
                if await pred():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"timed out waiting for {what}")

        try:
            await until(lambda: _has(pool, 1), "the first-run copy from SQL Server")
            await pg_insert(pool, 2)
            await until(lambda: _true((U[2], 2) in fake.rows), "the Postgres row on SQL Server")
            fake.write(ms_row(1, name="changed on SQL Server"))
            await until(lambda: _name(pool, 1, "changed on SQL Server"), "the SQL Server update")
            await pool.execute("delete from items where k2 = 2")
            await until(lambda: _true((U[2], 2) not in fake.rows), "the delete on SQL Server")
            await until(lambda: _status_rows(pool), "sync.status for both directions")
            assert await queued(pool) == 0, "nothing echoed back"
            assert set(await pg_rows(pool)) == set(fake.rows) == {(U[1], 1)}
        finally:
            bridge.stop.set()
            await asyncio.wait_for(task, 30)
            await pool.close()

    asyncio.run(main())


async def _true(value: bool) -> bool:
    return value


async def _has(pool: asyncpg.Pool, k2: int) -> bool:
    return bool(await pool.fetchval("select count(*) from items where k2 = $1", k2))


async def _name(pool: asyncpg.Pool, k2: int, name: str) -> bool:
    return await pool.fetchval("select name from items where k2 = $1", k2) == name


async def _status_rows(pool: asyncpg.Pool) -> bool:
    rows = await pool.fetch("select direction, applied_total from sync.status where link = $1",
                            LINK)
    return {r["direction"] for r in rows if r["applied_total"]} == {"a_to_b", "b_to_a"}


# --- issue 18: SQL Server on first contact --------------------------------------------------


def test_ct_an_unsendable_value_dead_letters_its_row_only(portal) -> None:
    """Item 1: the adapter hands over convert.Unsendable for a value Postgres cannot hold (a NUL
    read from SQL Server); that row is parked with the reason and the rest flows."""
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = ct_drain(pool, shape, fake)
        await d.drain_once()
        fake.write(ms_row(1))
        fake.write(ms_row(2, name=convert.Unsendable(
            "Postgres text cannot hold the NUL character")))
        fake.write(ms_row(3))
        await d.drain_once()
        assert {k[1] for k in await pg_rows(pool)} == {1, 3}
        dead = await pool.fetch("select key::text as key, error from sync.dead_letter")
        assert [json.loads(r["key"])["k2"] for r in dead] == [2]
        assert "NUL character" in dead[0]["error"]
        assert await cursor_of(pool) == (fake.version, fake.identity)

    run(portal, body)


def test_ct_truncate_without_a_version_move_is_not_idle(portal) -> None:
    """Item 14: the idle check also compares the table's min valid version."""
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        fake.write(ms_row(1))
        d = ct_drain(pool, shape, fake)
        await d.drain_once()
        assert (U[1], 1) in await pg_rows(pool)
        fake.rows.clear()
        fake.changed.clear()
        fake.min_valid = fake.version + 1  # TRUNCATE: min valid raised, current version not
        await d.drain_once()
        assert await pg_rows(pool) == {}, "the resync swept the truncated rows"

    run(portal, body)


def test_ct_pages_one_window_and_stores_the_cursor_once(portal) -> None:
    """Item 18: a large change set is read page by page within one version window; the
    source's restore record (item 13) and the sink cursor are written after the last page."""
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = ct_drain(pool, shape, fake)
        await d.drain_once()
        fake.records.clear()
        for i in range(1, 6):
            fake.write(ms_row(i))
        fake.page_size = 2
        reads = fake.reads
        assert await d.drain_once() == 5
        assert fake.reads - reads == 3, "pages of 2, 2 and 1"
        assert {k[1] for k in await pg_rows(pool)} == {1, 2, 3, 4, 5}
        assert fake.records == [fake.version], "recorded at the source once, before the store"
        assert await cursor_of(pool) == (fake.version, fake.identity)

    run(portal, body)


def test_ct_writes_elsewhere_do_not_rewrite_the_cursor(portal) -> None:
    """Item 19: a version moved by other tables reads this table once (nothing) and is
    remembered; the sink's cursor is not rewritten on every write anywhere."""
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = ct_drain(pool, shape, fake)
        await d.drain_once()
        stored = await cursor_of(pool)
        fake.version += 5  # transactions on other tracked tables
        reads = fake.reads
        assert await d.drain_once() == 0
        assert fake.reads == reads + 1
        assert await d.drain_once() == 0
        assert fake.reads == reads + 1, "known empty up to that version: idle"
        assert await cursor_of(pool) == stored
        fake.write(ms_row(1))
        assert await d.drain_once() == 1
        assert await cursor_of(pool) == (fake.version, fake.identity)

    run(portal, body)


def test_pg_to_ct_truncate_sweep_reads_the_sink_on_the_writer(portal) -> None:
    """Item 2: a sink-only SQL Server database need not allow snapshot isolation, so the
    TRUNCATE sweep reads its keys with sink=True (the READ COMMITTED writer)."""
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        for i in range(1, 4):
            await pg_insert(pool, i)
        d = pg_drain(pool, shape, fake)
        await d.recover()
        assert fake.prunes == [7], "item 20: old [sync].[applied_batches] records pruned"
        await d.drain_once()
        await pool.execute("truncate items")
        await d.drain_once()
        assert fake.rows == {}
        assert fake.page_reads and all(fake.page_reads)

    run(portal, body)


def test_ct_an_altered_source_table_is_rechecked_and_a_changed_column_stops(portal) -> None:
    """Item 22: modify_date moved -> the catalog is read again; an unrelated ALTER (index,
    CT) goes on, a changed linked column stops the drain with a clear error."""
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        d = ct_drain(pool, shape, fake)
        await d.drain_once()
        reads = fake.meta_reads
        fake.altered = 2  # e.g. CREATE INDEX: same columns
        await d.drain_once()
        assert fake.meta_reads == reads + 1
        t = shape.table("b")
        cols = dict(t.columns)
        cols["amount"] = catalog.Column("amount", "decimal(10,2)", True)
        fake.table_now = catalog.Table(t.schema, t.name, cols, t.pk)
        fake.altered = 3
        with pytest.raises(config.ConfigError, match="was altered while the bridge ran"):
            await d.drain_once()

    run(portal, body)
