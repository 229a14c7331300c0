"""The yoyo backend for SQL Server, driven through yoyo itself against a recording
fake pyodbc (no server here): what SQL it issues, that it parses as T-SQL, and
that the mssql:// scheme resolves to it."""

from __future__ import annotations

import re
import types
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp
from yoyo import read_migrations
from yoyo.connections import parse_uri

from syncbridge.engine.sqlserver import yoyo as mssql_yoyo

ROOT = Path(__file__).resolve().parent.parent
URL = ("mssql://sa:p%3Bw@db.example:1433/clinic"
       "?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes")


class FakeError(Exception):
    pass


class World:
    """Tables that exist, shared by every fake connection, with transactional DDL."""

    def __init__(self) -> None:
        self.tables: set[str] = set()
        self.applied: list[str] = []
        self.log: list[str] = []
        self.connects: list[tuple[str, bool]] = []


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = ()) -> FakeCursor:
        w = self.conn.world
        w.log.append(sql)
        # the named .sql entries start with their description comment, as SQL Server allows
        text = " ".join(" ".join(line for line in sql.splitlines()
                                 if not line.lstrip().startswith("--")).split())
        self.rows = []
        if text.startswith("SELECT @@TRANCOUNT"):
            self.rows = [(1 if self.conn.pending else 0,)]
            return self
        if text.startswith("SELECT XACT_STATE()"):
            self.rows = [(1 if self.conn.pending else 0,)]
            return self
        if not self.conn.autocommit:
            self.conn.pending.append(sql)
        m = re.match(r'CREATE TABLE ([\w\[\]".]+)', text)
        if m:
            name = re.sub(r'["\[\]]', "", m.group(1))
            if name in w.tables | set(self.conn.created):
                raise FakeError(f"There is already an object named '{name}'")
            self.conn.created.append(name)
        m = re.match(r'DROP TABLE ([\w\[\]".]+)', text)
        if m and re.sub(r'["\[\]]', "", m.group(1)) not in w.tables | set(self.conn.created):
            raise FakeError(f"Cannot drop the table '{m.group(1)}'")
        if text.startswith("SELECT table_name FROM information_schema.tables"):
            self.rows = [(t,) for t in sorted(w.tables | set(self.conn.created))]
        elif text.startswith('SELECT max([version])'):
            self.rows = [(2,)]
        elif text.startswith('SELECT [migration_hash] FROM'):
            self.rows = [(h,) for h in w.applied]
        elif text.startswith('INSERT INTO [_yoyo_migration]'):
            self.conn.marks.append(params[0])
        elif text.startswith('DELETE FROM [_yoyo_migration]'):
            self.conn.unmarks.append(params[0])
        if self.conn.autocommit:
            self.conn.commit()
        return self

    def close(self) -> None:
        pass

    @property
    def description(self) -> Any:
        return [("x",)] if self.rows else None

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self.rows = self.rows, []
        return rows


class FakeConnection:
    def __init__(self, world: World, autocommit: bool) -> None:
        self.world, self.autocommit = world, autocommit
        self.pending: list[str] = []
        self.created: list[str] = []
        self.marks: list[str] = []
        self.unmarks: list[str] = []

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        self.world.tables |= set(self.created)
        for s in self.pending:
            m = re.match(r'\s*DROP TABLE ([\w\[\]".]+)', s)
            if m:
                self.world.tables.discard(re.sub(r'["\[\]]', "", m.group(1)))
        self.world.applied += self.marks
        self.world.applied = [h for h in self.world.applied if h not in self.unmarks]
        self.pending, self.created, self.marks, self.unmarks = [], [], [], []

    def rollback(self) -> None:
        self.pending, self.created, self.marks, self.unmarks = [], [], [], []

    def close(self) -> None:
        pass


def fake_pyodbc(world: World) -> types.SimpleNamespace:
    def connect(conn_str: str, autocommit: bool = False) -> FakeConnection:
        world.connects.append((conn_str, autocommit))
        return FakeConnection(world, autocommit)

    return types.SimpleNamespace(
        connect=connect, DatabaseError=FakeError, paramstyle="qmark",
        drivers=lambda: ["ODBC Driver 18 for SQL Server"],
    )


@pytest.fixture
def backend() -> tuple[mssql_yoyo.MSSQLBackend, World]:
    world = World()

    class Backend(mssql_yoyo.MSSQLBackend):
        _driver = fake_pyodbc(world)

    b = Backend(parse_uri(URL), "_yoyo_migration")
    b.init_database()
    return b, world


def parses(sql: str) -> None:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    tree = [e for e in sqlglot.parse(body, read="tsql") if e is not None]
    assert tree, sql
    assert not any(isinstance(e, exp.Command) for e in tree), sql


def test_connects_with_an_odbc_string_and_manual_commit(backend: Any) -> None:
    _, world = backend
    conn_str, autocommit = world.connects[0]
    assert conn_str == ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:db.example,1433;"
                        "Database=clinic;UID=sa;PWD={p;w};TrustServerCertificate=yes;")
    assert autocommit is False


def test_apply_and_rollback_issue_only_tsql(backend: Any) -> None:
    b, world = backend
    migrations = read_migrations(str(ROOT / "migrations" / "sqlserver"))
    b.apply_migrations(b.to_apply(migrations))
    assert {"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock"} <= world.tables
    assert len(world.applied) == 3  # 0001_bridge_objects, 0002_restore_record, 0003_two_way_state
    b.rollback_migrations(b.to_rollback(migrations))
    assert world.applied == []
    log = [" ".join(s.split()) for s in world.log]
    assert not any(s.upper() in ("BEGIN", "BEGIN TRANSACTION") for s in log)
    assert not any("SAVEPOINT" in s.upper() for s in log)
    creates = [s for s in log if "CREATE TABLE" in s.upper()]
    assert creates and not any(re.search(r"\bTIMESTAMP\b", s, re.I) for s in creates)
    assert any(s.startswith("SAVE TRANSACTION sp_") for s in log)
    assert any(s.endswith("CREATE SCHEMA [sync];") for s in log)
    assert any(s.endswith("DROP SCHEMA [sync];") for s in log)
    for s in {x for x in world.log if not x.startswith("SAVE TRANSACTION")}:
        parses(s.replace("?", "NULL"))


def test_savepoints_are_tsql(backend: Any) -> None:
    b, world = backend
    with b.transaction():
        b.execute("SELECT 1 FROM sys.objects")
        b.savepoint("sp_7")
        b.savepoint_rollback("sp_7")
    assert "SAVE TRANSACTION sp_7" in world.log
    assert "ROLLBACK TRANSACTION sp_7" in world.log
    parses("ROLLBACK TRANSACTION sp_7;")
    with pytest.raises(ValueError):
        b.savepoint("x; DROP TABLE y")


def test_savepoint_before_any_statement_rolls_back_the_transaction(backend: Any) -> None:
    b, world = backend
    with b.transaction():
        b.savepoint("sp_8")  # Msg 628 if we sent SAVE TRANSACTION with no transaction open
        b.execute("CREATE TABLE t8 (id INT)")
        b.savepoint_rollback("sp_8")
    assert "SAVE TRANSACTION sp_8" not in world.log
    assert "t8" not in world.tables


def test_non_transactional_migrations_really_autocommit(backend: Any) -> None:
    b, _ = backend
    assert b.connection.autocommit is False
    with b.disable_transactions():
        assert b.connection.autocommit is True
    assert b.connection.autocommit is False


def test_entry_point_value_loads_the_backend() -> None:
    ep = EntryPoint(name="mssql", value="syncbridge.engine.sqlserver.yoyo:MSSQLBackend",
                    group="yoyo.backends")
    assert ep.load() is mssql_yoyo.MSSQLBackend


def test_mssql_scheme_is_registered_with_yoyo() -> None:
    # A packaging bug (the entry point missing from the installed metadata) must fail
    # here, never skip: without it `syncbridge migrate` cannot reach a SQL Server peer.
    names = {ep.name for ep in entry_points(group="yoyo.backends")}
    assert "mssql" in names, ('pyproject.toml lacks [project.entry-points."yoyo.backends"] '
                              'mssql = "syncbridge.engine.sqlserver.yoyo:MSSQLBackend" '
                              '(or the package was installed without it: reinstall)')
    from yoyo.backends.base import get_backend_class

    assert get_backend_class("mssql") is mssql_yoyo.MSSQLBackend


def test_an_odbc_string_dsn_reaches_yoyo_intact() -> None:
    odbc = "Driver={ODBC Driver 18 for SQL Server};Server=tcp:db,1433;PWD={a;b};Database=c;"
    world = World()

    class Backend(mssql_yoyo.MSSQLBackend):
        _driver = fake_pyodbc(world)

    Backend(parse_uri(mssql_yoyo.yoyo_url(odbc)), "_yoyo_migration")
    assert world.connects[0] == (odbc, False)
    assert mssql_yoyo.yoyo_url(URL) == URL
