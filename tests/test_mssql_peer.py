"""The SQL Server adapter without a server: connection strings, the install error,
and the read/apply flows against a scripted fake pyodbc (what it binds, how it
splits changes, when it asks for a resync)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import types
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from mssql_shape import COLUMNS, RAW, shape

from syncbridge.engine import errors
from syncbridge.engine.config import Peer, Side
from syncbridge.engine.sqlserver import capture as ctcap
from syncbridge.engine.sqlserver import changes as chg
from syncbridge.engine.sqlserver import connection as odbc
from syncbridge.engine.sqlserver import convert, openjson
from syncbridge.engine.sqlserver import peer as mp


def test_url_becomes_an_odbc_string() -> None:
    s = odbc.odbc_connection_string(
        "mssql://bridge:p%40ss%3Bword@db.example:14330/clinic"
        "?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes")
    assert s == ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:db.example,14330;"
                 "Database=clinic;UID=bridge;PWD={p@ss;word};TrustServerCertificate=yes;")
    assert odbc.odbc_driver(s) == "ODBC Driver 18 for SQL Server"
    plain = "Driver={FreeTDS};Server=db;Port=1433;UID=u;PWD=p;TDS_Version=7.4;"
    assert odbc.odbc_connection_string(plain) == plain
    assert odbc.odbc_driver(plain) == "FreeTDS"
    tds = odbc.odbc_connection_string("mssql://u:p@db/clinic?driver=FreeTDS&TDS_Version=7.4")
    assert tds == ("Driver={FreeTDS};Server=db;Port=1433;Database=clinic;UID=u;PWD=p;"
                   "TDS_Version=7.4;")
    assert odbc.odbc_driver("DSN=clinic;UID=u") is None


def test_missing_pyodbc_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyodbc", None)
    with pytest.raises(odbc.SqlServerUnavailable) as e:
        odbc.import_pyodbc()
    msg = str(e.value)
    for words in ("apt-get install unixodbc", "msodbcsql18", "tdsodbc",
                  "pip install 'syncbridge[sqlserver]'"):
        assert words in msg


def test_missing_driver_names_the_installed_ones() -> None:
    fake = types.SimpleNamespace(drivers=lambda: ["FreeTDS"])
    with pytest.raises(odbc.SqlServerUnavailable, match="'ODBC Driver 18 for SQL Server' is not"):
        odbc.check_driver(fake, "Driver={ODBC Driver 18 for SQL Server};Server=x;")
    odbc.check_driver(fake, "Driver={FreeTDS};Server=x;")


def test_catalog_types_are_spelled_for_the_mapping() -> None:
    assert ctcap.mssql_type("nvarchar", -1, 0, 0) == "nvarchar(max)"
    assert ctcap.mssql_type("nvarchar", 400, 0, 0) == "nvarchar(200)"
    assert ctcap.mssql_type("varbinary", 16, 0, 0) == "varbinary(16)"
    assert ctcap.mssql_type("numeric", 17, 18, 4) == "decimal(18,4)"
    assert ctcap.mssql_type("datetime2", 8, 27, 7) == "datetime2(7)"
    assert ctcap.mssql_type("datetimeoffset", 10, 33, 6) == "datetimeoffset(6)"
    assert ctcap.mssql_type("float", 8, 53, 0) == "float"
    assert ctcap.mssql_type("uniqueidentifier", 16, 0, 0) == "uniqueidentifier"


def test_echo_context_is_per_link_and_fits_varbinary_128() -> None:
    a, b = ctcap.echo_context("patients"), ctcap.echo_context("visits")
    assert len(a) == 16 and a == ctcap.echo_context("patients") and a != b


def test_transient_errors() -> None:
    assert errors.is_odbc_transient(Exception("08S01", "[08S01] Communication link failure"))
    assert errors.is_odbc_transient(Exception("40001", "Transaction was deadlocked (1205)"))
    assert not errors.is_odbc_transient(
        Exception("23000", "Violation of PRIMARY KEY constraint (2627)"))


# --- flows against a scripted fake driver --------------------------------------------------

Responder = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]] | None]


class Cursor:
    def __init__(self, conn: Conn) -> None:
        self.conn, self.rows, self.description = conn, [], None

    def execute(self, sql: str, *params: Any) -> Cursor:
        self.conn.log.append((sql, params))
        rows = self.conn.respond(sql, params)
        self.rows = list(rows or [])
        self.description = [("c",)] if rows is not None else None
        return self

    def fetchone(self) -> Any:
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list[Any]:
        rows, self.rows = self.rows, []
        return rows

    def nextset(self) -> bool:
        return False


class Conn:
    def __init__(self, respond: Responder, log: list[Any], autocommit: bool,
                 timeout: int = 0) -> None:
        self.respond, self.log, self.autocommit = respond, log, autocommit
        self.commits = 0
        self.login_timeout, self.timeout = timeout, 0

    def cursor(self) -> Cursor:
        return Cursor(self)

    def execute(self, sql: str, *params: Any) -> Cursor:
        return self.cursor().execute(sql, *params)

    def add_output_converter(self, *_: Any) -> None:
        pass

    def commit(self) -> None:
        self.log.append(("COMMIT", ()))

    def rollback(self) -> None:
        self.log.append(("ROLLBACK", ()))

    def close(self) -> None:
        pass


def make_peer(respond: Responder) -> tuple[mp.MssqlPeer, list[Any]]:
    log: list[Any] = []
    driver = types.SimpleNamespace(
        connect=lambda s, autocommit=False, timeout=0: Conn(respond, log, autocommit, timeout),
        drivers=lambda: ["ODBC Driver 18 for SQL Server"],
    )
    peer = Peer("clinic", "sqlserver", RAW["peers"]["clinic"]["dsn"])
    return mp.MssqlPeer(peer, driver=driver), log


IDENT = "0b0c6f57-4d3e-4a43-9e9b-4f1f4a3d2c11"
UID = "6F1D3C52-4F0E-4C59-9D59-3B8F5A1F3E11"


def ct_responder(cur_v: int = 10, min_v: int = 3, record: int | None = 5) -> Responder:
    def respond(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        if "CHANGE_TRACKING_MIN_VALID_VERSION" in sql:
            return [(cur_v, min_v)]
        if "[sync].[db_identity]" in sql:
            return [(IDENT.upper(),)]
        if "FROM [sync].[ct_client]" in sql:
            return [] if record is None else [(record,)]
        if "CHANGETABLE" in sql:
            present = (7, "U", 1, UID, 1, "Zoë", True, 1, 2, Decimal("1.5000"), 0.5, 0.25,
                       dt.datetime(2024, 5, 1, 10, 0, 0, 123456),
                       "2024-05-01 10:00:00.1234560 +02:00", dt.date(2024, 5, 1),
                       dt.time(9, 30), b"\x01", '{"a":1}', "x")
            gone = (8, "D", 0, UID, 2) + (None,) * (len(COLUMNS) - 2)
            return [present, gone]
        return None

    return respond


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_read_changes_splits_rows_and_gone_keys() -> None:
    peer, log = make_peer(ct_responder())
    s = shape()
    ctx = ctcap.echo_context("patients")
    got = run(peer.read_changes(s, "b", chg.CtCursor(5, IDENT), ctx))
    upserts, deletes, new, resync, more, _ = got
    assert not resync and new == chg.CtCursor(10, IDENT) and more is None
    assert deletes == [{"id": uuid.UUID(UID), "k2": 2}]
    row = upserts[0]
    assert row["id"] == uuid.UUID(UID) and row["name"] == "Zoë"
    assert row["paid_at"] == dt.datetime(2024, 5, 1, 8, 0, 0, 123456, dt.UTC)
    assert row["amount"] == Decimal("1.5000")
    sqls = [sql for sql, _ in log]
    assert sqls[:2] == ["SET LOCK_TIMEOUT 30000;", "SET TRANSACTION ISOLATION LEVEL SNAPSHOT;"]
    changes = [(sql, p) for sql, p in log if "CHANGETABLE" in sql][0]
    assert changes[1] == (5, ctx, 10, chg.CHANGE_PAGE_ROWS), "window (5, 10], one page"
    poll_at = next(i for i, x in enumerate(sqls) if "MIN_VALID" in x)
    identity_at = next(i for i, x in enumerate(sqls) if "[sync].[db_identity]" in x)
    assert poll_at < sqls.index("COMMIT", poll_at) < identity_at, (
        "the window's bound is read before the snapshot opens (item 7)")
    versions_at = next(i for i, x in enumerate(sqls[identity_at:]) if "MIN_VALID" in x) \
        + identity_at
    assert identity_at < versions_at, "a table read opens the snapshot before the versions"
    changes_at = next(i for i, x in enumerate(sqls) if "CHANGETABLE" in x)
    assert versions_at < changes_at < sqls.index("COMMIT", changes_at), "one snapshot, then commit"
    run(peer.close())


@pytest.mark.parametrize(("cursor", "why"), [
    (None, "no cursor yet"),
    (chg.CtCursor(2, IDENT), "older than the min valid version"),
    (chg.CtCursor(11, IDENT), "ahead of the database (restored?)"),
    (chg.CtCursor(5, "another-database"), "a different database identity"),
    (chg.CtCursor(6, IDENT), "the source's record (5) is behind the cursor: restored"),
])
def test_read_changes_asks_for_resync(cursor: chg.CtCursor | None, why: str) -> None:
    peer, log = make_peer(ct_responder())
    got = run(peer.read_changes(shape(), "b", cursor, b"x" * 16))
    assert got.resync_needed, why
    assert got.new_cursor == chg.CtCursor(10, IDENT) and got.upserts == [] == got.deletes
    assert not any("CHANGETABLE" in sql for sql, _ in log)
    run(peer.close())


def test_read_changes_resyncs_without_a_restore_record() -> None:
    peer, log = make_peer(ct_responder(record=None))
    got = run(peer.read_changes(shape(), "b", chg.CtCursor(5, IDENT), b"x" * 16))
    assert got.resync_needed, "no record of the last sync on the source: restored before it"
    run(peer.close())


def test_read_changes_refuses_untracked_table() -> None:
    peer, _ = make_peer(lambda sql, p: [(10, None)] if "MIN_VALID" in sql else None)
    with pytest.raises(odbc.SqlServerError, match="VIEW CHANGE TRACKING"):
        run(peer.read_changes(shape(), "b", chg.CtCursor(5, IDENT), b"x" * 16))
    run(peer.close())


def apply_responder(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
    if "SELECT @u AS updated" in sql:
        return [(1, 1, 1)]
    return None


def pg_row(k2: int, **over: Any) -> dict[str, Any]:
    row = {
        "id": uuid.UUID(UID), "k2": k2, "name": "Zoë 😀", "flag": True, "small": 1, "big": 2**62,
        "amount": Decimal("12345678901234.5678"), "ratio": 0.5, "score": 0.1,
        "seen_at": dt.datetime(2024, 5, 1, 10, 0, 0, 123456),
        "paid_at": dt.datetime(2024, 5, 1, 10, 0, 0, 123456, dt.UTC),
        "born": dt.date(2024, 5, 1), "slot": dt.time(9, 30, 0, 1), "blob": b"\x00\xff",
        "doc": '{"a": 1}', "col]x": None,
    }
    row.update(over)
    return row


def test_apply_batch_binds_json_rows_and_records_the_batch() -> None:
    peer, log = make_peer(apply_responder)
    batch = uuid.uuid4()
    ctx = ctcap.echo_context("patients")
    rows = [pg_row(1, name="old"), pg_row(1), pg_row(2)]
    counts = run(peer.apply_batch(shape(), "b", batch, rows,
                                  [{"id": uuid.UUID(UID), "k2": 3}], ctx))
    assert counts == mp.ApplyCounts(1, 1, 1)
    sql, params = [(s, p) for s, p in log if "XACT_ABORT" in s][0]
    assert log[-1] == ("COMMIT", ())
    p = dict(zip(openjson.APPLY_PARAMS, params, strict=True))
    assert p["ctx"] == ctx and p["batch"] == str(batch) and p["link"] == "patients"
    assert p["source_side"] == "a" and p["signals"] == 4
    assert p["version"] is None and p["db_identity"] is None
    rows = json.loads(p["rows"])
    assert len(rows) == 2, "duplicate keys collapse to the last row"
    first = rows[0]
    assert first["c2"] == "Zoë 😀" and first["c5"] == str(2**62)
    assert first["c6"] == "12345678901234.5678"
    assert first["c9"] == "2024-05-01T10:00:00.123456"
    assert first["c10"] == "2024-05-01T10:00:00.123456+00:00"
    assert first["c13"] == "00ff" and first["c3"] == 1
    assert json.loads(p["dels"]) == [{"c0": UID.lower(), "c1": "3"}]
    assert "SET IDENTITY_INSERT" not in sql
    run(peer.close())


def test_apply_batch_stores_a_sqlserver_source_cursor() -> None:
    peer, log = make_peer(apply_responder)
    run(peer.apply_batch(shape(), "b", uuid.uuid4(), [pg_row(1)], [], b"c" * 16,
                         cursor=chg.CtCursor(42, IDENT)))
    sql, params = [(s, p) for s, p in log if "XACT_ABORT" in s][0]
    assert "[sync].[ct_cursor]" in sql
    p = dict(zip(openjson.APPLY_PARAMS, params, strict=True))
    assert (p["version"], p["db_identity"]) == (42, IDENT)
    run(peer.close())


def test_a_value_that_cannot_travel_is_one_bad_row() -> None:
    peer, log = make_peer(apply_responder)
    with pytest.raises(convert.BadRow) as e:
        run(peer.apply_batch(shape(), "b", uuid.uuid4(),
                             [pg_row(1), pg_row(2, amount=Decimal("NaN"))], [], b"c" * 16))
    assert (e.value.index, e.value.column) == (1, "amount")
    assert not any("XACT_ABORT" in s for s, _ in log), "nothing was sent"
    run(peer.close())


def test_enable_change_tracking_runs_only_what_is_missing() -> None:
    def respond(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        if "SELECT DB_NAME()" in sql:
            return [("clinic",)]
        if "snapshot_isolation_state_desc" in sql:
            return [("OFF",)]
        if "sys.change_tracking_databases" in sql:
            return [(True, 2, "DAYS")]
        if "sys.key_constraints" in sql:
            return [(1,)]
        if "sys.change_tracking_tables" in sql:
            return []
        return None

    peer, log = make_peer(respond)
    ran = run(peer.enable_change_tracking([Side("clinic", "dbo", "we]ird")]))
    assert [r.splitlines()[-1] for r in ran] == [
        "ALTER DATABASE [clinic] SET ALLOW_SNAPSHOT_ISOLATION ON;",
        "ALTER TABLE [dbo].[we]]ird] ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF);",
    ]
    assert "COMMIT" not in [s for s, _ in log], "autocommit: no transaction around ALTER DATABASE"
    run(peer.close())


def fake_driver(respond: Responder, log: list[Any]) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        connect=lambda s, autocommit=False, timeout=0: Conn(respond, log, autocommit, timeout),
        drivers=lambda: ["ODBC Driver 18 for SQL Server"],
    )


def test_read_table_sync_spells_types_and_keeps_pk_order() -> None:
    def respond(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        if "FROM sys.columns AS c\n  JOIN sys.types" in sql:
            assert params == ("[dbo].[we]]ird]",)
            return [("k2", "int", 4, 10, 0, False, None, False),
                    ("id", "uniqueidentifier", 16, 0, 0, False, None, False),
                    ("name", "nvarchar", -1, 0, 0, True, "Latin1_General_CI_AS", False),
                    ("amount", "decimal", 9, 18, 4, True, None, False),
                    ("paid_at", "datetimeoffset", 10, 33, 6, True, None, False)]
        if "is_primary_key = 1" in sql:
            return [("id",), ("k2",)]
        return None

    log: list[Any] = []
    peer = Peer("clinic", "sqlserver", RAW["peers"]["clinic"]["dsn"])
    table = ctcap.read_table_sync(peer, Side("clinic", "dbo", "we]ird"),
                               driver=fake_driver(respond, log))
    assert table is not None and table.pk == ("id", "k2")
    assert {c: col.type for c, col in table.columns.items()} == {
        "k2": "int", "id": "uniqueidentifier", "name": "nvarchar(max)",
        "amount": "decimal(18,4)", "paid_at": "datetimeoffset(6)"}
    assert not table.columns["id"].nullable and table.columns["name"].nullable


def test_install_and_uninstall_capture_are_idempotent_and_autocommit() -> None:
    state = {"table_ct": False, "db_ct": False}

    def respond(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        if "SELECT DB_NAME()" in sql:
            return [("clinic",)]
        if "snapshot_isolation_state_desc" in sql:
            return [("ON",)]
        if "sys.change_tracking_databases" in sql:
            return [(True, 7, "DAYS")] if state["db_ct"] else []
        if "sys.key_constraints" in sql:
            return [(1,)]
        if "sys.change_tracking_tables" in sql:
            return [(False, 1, 1, 0)] if state["table_ct"] else []
        if "SET CHANGE_TRACKING = ON" in sql:
            state["db_ct"] = True
        if "ENABLE CHANGE_TRACKING" in sql:
            state["table_ct"] = True
        if "DISABLE CHANGE_TRACKING" in sql:
            state["table_ct"] = False
        return None

    log: list[Any] = []
    driver = fake_driver(respond, log)
    peer = Peer("clinic", "sqlserver", RAW["peers"]["clinic"]["dsn"])
    side = Side("clinic", "dbo", "patients")
    first = ctcap.install_capture(peer, side, driver=driver)
    assert log[0] == ("SET LOCK_TIMEOUT 30000;", ())
    assert [r.splitlines()[-1] for r in first] == [
        "ALTER DATABASE [clinic] SET CHANGE_TRACKING = ON "
        "(CHANGE_RETENTION = 7 DAYS, AUTO_CLEANUP = ON);",
        "ALTER TABLE [dbo].[patients] ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF);",
    ]
    assert ctcap.install_capture(peer, side, driver=driver) == [], "second run changes nothing"
    assert [r.splitlines()[-1] for r in ctcap.uninstall_capture(peer, side, driver=driver)] == [
        "ALTER TABLE [dbo].[patients] DISABLE CHANGE_TRACKING;"]
    assert ctcap.uninstall_capture(peer, side, driver=driver) == []
    assert "COMMIT" not in [s for s, _ in log]
