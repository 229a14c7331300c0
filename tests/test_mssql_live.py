"""Real round trips against SQL Server: set SYNC_TEST_MSSQL_URL (an mssql:// URL or an
ODBC string for a login that may CREATE DATABASE), or have Docker and
testcontainers so a 2022 container is started; otherwise every test here is
skipped. Needs pyodbc + unixODBC + an ODBC driver (see docs/sqlserver.md).

Each session gets its own database with snapshot isolation, change tracking,
the representative table (tests/mssql_shape.py) and the bridge objects applied
through the yoyo backend, so these tests also exercise migrations and setup.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from mssql_shape import CREATE_TABLE, KEY, TABLE, mssql_table, shape

from syncbridge.engine import errors
from syncbridge.engine.config import Peer, Side
from syncbridge.engine.sqlserver import capture as ctcap
from syncbridge.engine.sqlserver import changes as chg
from syncbridge.engine.sqlserver import connection as odbc
from syncbridge.engine.sqlserver import convert
from syncbridge.engine.sqlserver import peer as mp

ROOT = Path(__file__).resolve().parent.parent
NO_URL = "SYNC_TEST_MSSQL_URL is not set"
IMAGE = "mcr.microsoft.com/mssql/server:2022-latest"
PASSWORD = "Sync!Bridge2024"  # meets the container's password policy (reference §5)
SIDE = Side("clinic", "dbo", TABLE)


def _docker_missing() -> str | None:
    """Why no container can be started here (None: Docker answers)."""
    if not (shutil.which("docker") or os.path.exists("/var/run/docker.sock")):
        return "no docker binary on PATH and no /var/run/docker.sock"
    try:
        import docker
    except ImportError:
        return "the docker Python package is missing (pip install 'testcontainers[mssql]')"
    try:
        docker.from_env().ping()
    except docker.errors.DockerException as e:
        return f"the Docker engine does not answer ({e})"
    return None


def _container_class() -> Any:
    try:  # testcontainers >= 4.15; the old path still works with a DeprecationWarning
        from testcontainers.community.mssql import SqlServerContainer
    except ImportError:
        from testcontainers.mssql import SqlServerContainer
    return SqlServerContainer


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    url = os.environ.get("SYNC_TEST_MSSQL_URL")
    if url:
        yield url
        return
    missing = _docker_missing()
    if missing:
        pytest.skip(f"no SQL Server: {NO_URL} and {missing}")
    try:
        container = _container_class()
    except ImportError:
        pytest.skip(f"no SQL Server: {NO_URL} and testcontainers is not installed "
                    "(pip install 'testcontainers[mssql]')")
    with container(IMAGE, password=PASSWORD) as c:
        host, port = c.get_container_host_ip(), c.get_exposed_port(1433)
        yield (f"mssql://sa:{PASSWORD.replace('!', '%21')}@{host}:{port}/master"
               "?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes")


@pytest.fixture(scope="session")
def pyodbc_module(server_url: str) -> Any:
    try:
        pyodbc = odbc.import_pyodbc()
        odbc.check_driver(pyodbc, odbc.odbc_connection_string(server_url))
    except odbc.SqlServerUnavailable as e:
        if os.environ.get("SYNC_TEST_MSSQL_URL"):
            pytest.fail(str(e))  # asked for SQL Server explicitly: a missing driver is an error
        pytest.skip(str(e))
    return pyodbc


def _with_database(url: str, database: str) -> str:
    """The same server, another database (URL or ODBC string)."""
    parts = urlsplit(url)
    if parts.scheme.startswith(("mssql", "sqlserver")):
        return urlunsplit(parts._replace(path="/" + database))
    kept = [kv for kv in url.split(";") if kv and not kv.lower().startswith("database=")]
    return ";".join([*kept, f"Database={database}"]) + ";"


@pytest.fixture(scope="session")
def db_url(server_url: str, pyodbc_module: Any) -> Iterator[str]:
    name = f"sb_test_{uuid.uuid4().hex[:8]}"
    admin = pyodbc_module.connect(odbc.odbc_connection_string(server_url), autocommit=True)
    admin.execute(f"CREATE DATABASE [{name}];")
    url = _with_database(server_url, name)
    try:
        cn = pyodbc_module.connect(odbc.odbc_connection_string(url), autocommit=True)
        cn.execute(CREATE_TABLE)
        cn.close()
        _migrate(url, "apply")
        peer = mp.MssqlPeer(Peer("clinic", "sqlserver", url))
        ran = asyncio.run(peer.enable_change_tracking([SIDE], retention=1, unit="DAYS"))
        assert any("CHANGE_TRACKING = ON" in r for r in ran)
        again = asyncio.run(peer.enable_change_tracking([SIDE], retention=1, unit="DAYS"))
        assert again == [], "setup is idempotent"
        yield url
    finally:
        admin.execute(f"ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE;")
        admin.execute(f"DROP DATABASE [{name}];")
        admin.close()


def _migrate(url: str, direction: str) -> None:
    from yoyo import read_migrations
    from yoyo.connections import parse_uri

    from syncbridge.engine.sqlserver.yoyo import MSSQLBackend, yoyo_url

    backend = MSSQLBackend(parse_uri(yoyo_url(url)), "_yoyo_migration")
    backend.init_database()
    migrations = read_migrations(str(ROOT / "migrations" / "sqlserver"))
    with backend.lock():
        if direction == "apply":
            backend.apply_migrations(backend.to_apply(migrations))
        else:
            backend.rollback_migrations(backend.to_rollback(migrations))
    backend.connection.close()


@pytest.fixture
def peer(db_url: str, pyodbc_module: Any) -> Iterator[mp.MssqlPeer]:
    p = mp.MssqlPeer(Peer("clinic", "sqlserver", db_url))
    table = asyncio.run(p.read_table(SIDE))
    assert table is not None
    app = pyodbc_module.connect(odbc.odbc_connection_string(db_url), autocommit=True)
    app.execute(f"DELETE FROM [dbo].[{TABLE.replace(']', ']]')}];")
    app.close()
    yield p
    asyncio.run(p.close())


@pytest.fixture
def app(db_url: str, pyodbc_module: Any) -> Iterator[Any]:
    """A plain application connection (no change tracking context)."""
    cn = pyodbc_module.connect(odbc.odbc_connection_string(db_url), autocommit=True)
    yield cn
    cn.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stored(peer: mp.MssqlPeer, cs: chg.ChangeSet) -> chg.CtCursor:
    """What the drain does before its sink stores a cursor: the source's restore record."""
    run(peer.record_client_version("patients", "b", cs.new_cursor.version))
    return cs.new_cursor


UID1 = uuid.UUID("00000000-0000-0000-0000-000000000001")
UID2 = uuid.UUID("00000000-0000-0000-0000-000000000002")
CTX = ctcap.echo_context("patients")


def pg_row(uid: uuid.UUID, k2: int, **over: Any) -> dict[str, Any]:
    """A row as asyncpg returns it from the Postgres side."""
    row = {
        "id": uid, "k2": k2, "name": "Zoë Ångström 患者 😀", "flag": True, "small": -32768,
        "big": 2**63 - 1, "amount": Decimal("12345678901234.5678"), "ratio": 0.5,
        "score": 0.1, "seen_at": dt.datetime(2024, 5, 1, 10, 0, 0, 123456),
        "paid_at": dt.datetime(2024, 5, 1, 10, 0, 0, 654321, dt.UTC),
        "born": dt.date(1, 1, 1), "slot": dt.time(23, 59, 59, 999999),
        "blob": b"\x00\x01\xfe\xff", "doc": '{"a": [1, "é"]}', "col]x": None,
    }
    row.update(over)
    return row


def test_read_table_spells_the_linked_types(peer: mp.MssqlPeer) -> None:
    table = run(peer.read_table(SIDE))
    expected = mssql_table()
    assert table.pk == KEY
    assert {c: col.type for c, col in table.columns.items()} == {
        c: col.type for c, col in expected.columns.items()}
    shape(table)  # every pair passes the type check against the real catalog


def test_apply_then_read_back_every_type_exactly(peer: mp.MssqlPeer) -> None:
    s = shape(run(peer.read_table(SIDE)))
    batch = uuid.uuid4()
    rows = [pg_row(UID1, 1), pg_row(UID2, 2, name=None, blob=None, paid_at=None)]
    assert run(peer.apply_batch(s, "b", batch, rows, [], CTX)) == (0, 2, 0)
    assert run(peer.applied(batch))
    got = run(peer.read_rows(s, "b", [{"id": UID1, "k2": 1}, {"id": UID2, "k2": 2}]))
    by_key = {(r["id"], r["k2"]): r for r in got}
    for want in rows:
        back = by_key[(want["id"], want["k2"])]
        for col, value in want.items():
            assert back[col] == value, col


def test_update_and_delete_in_one_batch(peer: mp.MssqlPeer) -> None:
    s = shape(run(peer.read_table(SIDE)))
    run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1), pg_row(UID2, 2)], [], CTX))
    counts = run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1, name="new")],
                                  [{"id": UID2, "k2": 2}, {"id": UID2, "k2": 99}], CTX))
    assert counts == (1, 0, 1), "unknown keys delete nothing"
    keys = run(peer.read_keys_page(s, "b", None, 10))
    assert keys == [{"id": UID1, "k2": 1}]


def test_replayed_batch_id_rolls_everything_back(peer: mp.MssqlPeer, pyodbc_module: Any) -> None:
    s = shape(run(peer.read_table(SIDE)))
    batch = uuid.uuid4()
    run(peer.apply_batch(s, "b", batch, [pg_row(UID1, 1)], [], CTX))
    with pytest.raises(pyodbc_module.IntegrityError):
        run(peer.apply_batch(s, "b", batch, [pg_row(UID1, 1, name="changed")], [], CTX))
    row = run(peer.read_rows(s, "b", [{"id": UID1, "k2": 1}]))[0]
    assert row["name"] == pg_row(UID1, 1)["name"], "XACT_ABORT undid the update"


def test_own_writes_are_filtered_by_context(peer: mp.MssqlPeer) -> None:
    s = shape(run(peer.read_table(SIDE)))
    start = stored(peer, run(peer.read_changes(s, "b", None, CTX)))
    run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1)], [], CTX))
    mine = run(peer.read_changes(s, "b", start, CTX))
    assert not mine.resync_needed and mine.upserts == [] and mine.deletes == []
    assert mine.new_cursor.version > start.version, "the bridge's own write raises the version"
    other = run(peer.read_changes(s, "b", start, ctcap.echo_context("another-link")))
    assert [(r["id"], r["k2"]) for r in other.upserts] == [(UID1, 1)]


def test_application_writes_become_upserts_and_deletes(peer: mp.MssqlPeer, app: Any) -> None:
    s = shape(run(peer.read_table(SIDE)))
    run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1), pg_row(UID2, 2)], [], CTX))
    cursor = stored(peer, run(peer.read_changes(s, "b", None, CTX)))
    assert run(peer.poll_version(SIDE))[0] == cursor.version, "idle: poll equals the cursor"
    t = f"[dbo].[{TABLE.replace(']', ']]')}]"
    app.execute(f"UPDATE {t} SET name = N'ändern' WHERE id = ? AND k2 = 1;", str(UID1))
    app.execute(f"DELETE FROM {t} WHERE id = ? AND k2 = 2;", str(UID2))
    app.execute(f"INSERT {t} (id, k2, name) VALUES (?, 3, N'neu');", str(UID2))
    assert run(peer.poll_version(SIDE))[0] > cursor.version
    got = run(peer.read_changes(s, "b", cursor, CTX))
    assert not got.resync_needed
    assert sorted((r["k2"], r["name"]) for r in got.upserts) == [(1, "ändern"), (3, "neu")]
    assert got.deletes == [{"id": UID2, "k2": 2}]
    again = run(peer.read_changes(s, "b", stored(peer, got), CTX))
    assert again.upserts == [] and again.deletes == []


def test_resync_without_cursor_after_truncate_and_on_new_identity(
        peer: mp.MssqlPeer, app: Any) -> None:
    s = shape(run(peer.read_table(SIDE)))
    first = run(peer.read_changes(s, "b", None, CTX))
    assert first.resync_needed and first.new_cursor.db_identity
    ok = run(peer.read_changes(s, "b", stored(peer, first), CTX))
    assert not ok.resync_needed
    other_db = chg.CtCursor(first.new_cursor.version, str(uuid.uuid4()))
    assert run(peer.read_changes(s, "b", other_db, CTX)).resync_needed
    run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1)], [], CTX))
    app.execute(f"TRUNCATE TABLE [dbo].[{TABLE.replace(']', ']]')}];")
    assert run(peer.read_changes(s, "b", first.new_cursor, CTX)).resync_needed, \
        "TRUNCATE is not tracked: it must force a resync, never a silent skip"


def test_keyset_pages_cover_every_key_once(peer: mp.MssqlPeer) -> None:
    s = shape(run(peer.read_table(SIDE)))
    rows = [pg_row(uuid.uuid4(), i) for i in range(25)]
    run(peer.apply_batch(s, "b", uuid.uuid4(), rows, [], CTX))
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        page = run(peer.read_keys_page(s, "b", after, 10))
        if not page:
            break
        seen += page
        after = page[-1]
    assert len(seen) == 25
    assert {(r["id"], r["k2"]) for r in seen} == {(r["id"], r["k2"]) for r in rows}
    full = run(peer.read_keys_page(s, "b", None, 3, values=True))
    assert len(full) == 3 and "amount" in full[0]


def test_migrations_roll_back_and_apply_again(db_url: str, pyodbc_module: Any) -> None:
    _migrate(db_url, "rollback")
    cn = pyodbc_module.connect(odbc.odbc_connection_string(db_url), autocommit=True)
    assert cn.execute("SELECT SCHEMA_ID(N'sync');").fetchone()[0] is None
    _migrate(db_url, "apply")
    assert cn.execute("SELECT COUNT(*) FROM [sync].[db_identity];").fetchone()[0] == 1
    cn.close()


# --- end to end: a real `syncbridge run` between Postgres and SQL Server, both directions ------


def _pg_create_table() -> str:
    from mssql_shape import COLUMNS

    cols = ", ".join(f'"{n}" {pg}' for n, pg, _ in COLUMNS)
    keys = ", ".join(f'"{k}"' for k in KEY)
    return f'create table public."{TABLE}" ({cols}, primary key ({keys}))'


def test_bridge_process_syncs_postgres_and_sql_server_both_ways(
        db_url: str, pyodbc_module: Any, new_db: Any, tmp_path: Path) -> None:
    """`syncbridge run` as an operator runs it: Postgres -> SQL Server and back, no echo,
    values exact, deletes both ways, clean exit on SIGTERM."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import psycopg
    from psycopg.types.json import Jsonb

    from syncbridge.bridge.bench.rig import toml_links, wait_until
    from syncbridge.engine import config as config_mod
    from syncbridge.engine.install import install
    from syncbridge.engine.migrate import migrate

    pg_dsn = new_db("portal")
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(_pg_create_table())
    table = f"[dbo].[{TABLE.replace(']', ']]')}]"
    app = pyodbc_module.connect(odbc.odbc_connection_string(db_url), autocommit=True)
    app.execute(f"DELETE FROM {table};")
    path = tmp_path / "syncbridge.toml"
    quoted = {"pg": pg_dsn.replace('"', '\\"'), "ms": db_url.replace('"', '\\"')}
    path.write_text(
        'hub = "portal"\n\n[bridge]\nct_poll_interval = 0.1\n\n'
        f'[peers.portal]\ndialect = "postgres"\ndsn = "{quoted["pg"]}"\n\n'
        f'[peers.clinic]\ndialect = "sqlserver"\ndsn = "{quoted["ms"]}"\n\n'
        + toml_links([{"name": "patients", "a": {"peer": "portal", "table": f"public.{TABLE}"},
                       "b": {"peer": "clinic", "table": f"dbo.{TABLE}"}, "key": list(KEY),
                       "direction": "both"}])
    )
    cfg = config_mod.load(path)
    # the SQL Server objects were applied by the db_url fixture: migrate Postgres only
    migrate(config_mod.parse({"peers": {"portal": cfg.raw["peers"]["portal"]}}))
    list(install(cfg))
    log_path = tmp_path / "bridge.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncbridge.bridge.cli", "--config", str(path), "run"],
            stdout=log_file, stderr=log_file)
    try:
        def ms_names() -> dict[int, str | None]:
            rows = app.execute(f"SELECT k2, name FROM {table};").fetchall()
            return {r[0]: r[1] for r in rows}

        def pg_names() -> dict[int, str | None]:
            with psycopg.connect(pg_dsn) as c:
                rows = c.execute(f'select k2, name from public."{TABLE}"').fetchall()
            return {r[0]: r[1] for r in rows}

        # Postgres -> SQL Server, every type exact
        want = pg_row(UID1, 1)
        cols = list(want)
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute(
                f'insert into public."{TABLE}" ({", ".join(chr(34) + k + chr(34) for k in cols)}) '
                f'values ({", ".join(["%s"] * len(cols))})',
                [Jsonb(json.loads(v)) if k == "doc" else v
                 for k, v in want.items()])
        wait_until(lambda: ms_names() == {1: want["name"]}, 60, "the Postgres row on SQL Server")
        p = mp.MssqlPeer(Peer("clinic", "sqlserver", db_url))
        try:
            s = shape(asyncio.run(p.read_table(SIDE)))
            back = asyncio.run(p.read_rows(s, "b", [{"id": UID1, "k2": 1}]))[0]
        finally:
            asyncio.run(p.close())
        for col, value in want.items():
            if col == "doc":
                assert json.loads(back[col]) == json.loads(value)
            else:
                assert back[col] == value, col

        # SQL Server -> Postgres (an application write, no context)
        app.execute(f"INSERT {table} (id, k2, name, amount) VALUES (?, 2, N'von SQL Server ✓', "
                    "CAST(? AS decimal(18,4)));", str(UID2), "-0.0001")
        wait_until(lambda: pg_names() == {1: want["name"], 2: "von SQL Server ✓"}, 60,
                   "the SQL Server row on Postgres")
        with psycopg.connect(pg_dsn) as c:
            amount = c.execute(f'select amount from public."{TABLE}" where k2 = 2').fetchone()[0]
        assert amount == Decimal("-0.0001")

        # deletes both ways, and no echo: the queue drains and stays empty
        app.execute(f"DELETE FROM {table} WHERE k2 = 1;")
        wait_until(lambda: set(pg_names()) == {2}, 60, "the SQL Server delete on Postgres")
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute(f'delete from public."{TABLE}" where k2 = 2')
        wait_until(lambda: ms_names() == {}, 60, "the Postgres delete on SQL Server")

        def queue_empty() -> bool:
            with psycopg.connect(pg_dsn) as c:
                return c.execute("select count(*) from sync.queue").fetchone()[0] == 0

        wait_until(queue_empty, 30, "the Postgres queue to drain")
        time.sleep(1.0)  # a late echo would show up as a queued signal or a changed row
        assert queue_empty() and pg_names() == {} and ms_names() == {}, "nothing echoed back"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log_text = log_path.read_text(errors="replace")
        assert "event=resync" in log_text and "event=conflict " not in log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        app.close()


# --- issue 18: each finding against a real server -----------------------------------------------


def test_issue18_item1_a_nul_costs_its_row_only(peer: mp.MssqlPeer, app: Any) -> None:
    s = shape(run(peer.read_table(SIDE)))
    cursor = stored(peer, run(peer.read_changes(s, "b", None, CTX)))
    t = f"[dbo].[{TABLE.replace(']', ']]')}]"
    app.execute(f"INSERT {t} (id, k2, name) VALUES (?, 1, N'a' + NCHAR(0) + N'b');", str(UID1))
    app.execute(f"INSERT {t} (id, k2, name) VALUES (?, 2, N'fine');", str(UID2))
    got = run(peer.read_changes(s, "b", cursor, CTX))
    names = {r["k2"]: r["name"] for r in got.upserts}
    assert isinstance(names[1], convert.Unsendable) and names[2] == "fine"


def test_issue18_item9_native_numbers_of_a_real_error(peer: mp.MssqlPeer,
                                                      pyodbc_module: Any) -> None:
    s = shape(run(peer.read_table(SIDE)))
    batch = uuid.uuid4()
    run(peer.apply_batch(s, "b", batch, [pg_row(UID1, 1205)], [], CTX))
    with pytest.raises(pyodbc_module.IntegrityError) as e:
        run(peer.apply_batch(s, "b", batch, [pg_row(UID1, 1205)], [], CTX))
    assert 2627 in errors.native_errors(e.value) and not errors.is_odbc_transient(e.value)


def test_issue18_item14_truncate_raises_the_min_valid_version(peer: mp.MssqlPeer,
                                                              app: Any) -> None:
    s = shape(run(peer.read_table(SIDE)))
    run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1)], [], CTX))
    cursor = stored(peer, run(peer.read_changes(s, "b", None, CTX)))
    app.execute(f"TRUNCATE TABLE [dbo].[{TABLE.replace(']', ']]')}];")
    _, min_v, _ = run(peer.poll_version(SIDE))
    assert min_v > cursor.version, "what the idle check compares"


def test_issue18_item13_an_older_restore_record_forces_a_resync(peer: mp.MssqlPeer) -> None:
    s = shape(run(peer.read_table(SIDE)))
    cursor = stored(peer, run(peer.read_changes(s, "b", None, CTX)))
    run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1)], [], CTX))
    ahead = chg.CtCursor(cursor.version + 1, cursor.db_identity)  # the sink saw more ...
    assert run(peer.read_changes(s, "b", ahead, CTX)).resync_needed, "... than the source recalls"


def test_issue18_items8_22_key_change_and_no_op_updates(peer: mp.MssqlPeer, app: Any) -> None:
    s = shape(run(peer.read_table(SIDE)))
    run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1)], [], CTX))
    assert run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1)], [], CTX)) == (0, 0, 0)
    cursor = stored(peer, run(peer.read_changes(s, "b", None, CTX)))
    run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID1, 1)], [], CTX))
    other = run(peer.read_changes(s, "b", cursor, ctcap.echo_context("another-link")))
    assert other.upserts == [], "an equal row is not rewritten, so no CT row for other links"
    # a key change on a table with another UNIQUE column: the old key's delete must run
    # before the new key's insert, or the insert fails with Msg 2601 (item 8)
    t = f"[dbo].[{TABLE.replace(']', ']]')}]"
    app.execute(f"CREATE UNIQUE INDEX ux_small ON {t} (small);")
    try:
        moved = run(peer.apply_batch(s, "b", uuid.uuid4(), [pg_row(UID2, 2)],
                                     [{"id": UID1, "k2": 1}], CTX))
        assert moved == (0, 1, 1)
    finally:
        app.execute(f"DROP INDEX ux_small ON {t};")


def test_issue18_readiness_of_the_test_database(peer: mp.MssqlPeer) -> None:
    warnings = run(peer.ensure_ready(SIDE, source=True, sink=True, retention_days=1))
    assert all(w.level == "warning" for w in warnings)
