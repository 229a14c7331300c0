"""`syncbridge doctor`: Postgres peers against the embedded server (real privileges,
real read-only transaction); SQL Server peers against the scripted pyodbc double of
test_mssql_peer.py (what it asks and what it prints for each answer)."""

from __future__ import annotations

import datetime as dt
import types
from typing import Any

import psycopg
import pytest
from test_mssql_peer import Conn
from test_mssql_review import db_responder

from syncbridge.bridge import cli
from syncbridge.engine import config, doctor
from syncbridge.engine.sqlserver import connection as odbc

PG_TABLES = ("create table a (id int primary key, v text); "
             "create table b (id int primary key, v text);")


def pg_config(dsn: str) -> config.Config:
    return config.parse({
        "peers": {"portal": {"dialect": "postgres", "dsn": dsn}},
        "links": [{"name": "ab", "a": {"peer": "portal", "table": "public.a"},
                   "b": {"peer": "portal", "table": "public.b"}, "key": ["id"],
                   "direction": "a_to_b"}],
    })


def test_doctor_passes_a_ready_postgres_peer_and_writes_nothing(new_db, capsys) -> None:
    dsn = new_db("doc")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PG_TABLES)
    code, lines = doctor.report(pg_config(dsn))
    assert code == 0 and lines[-1] == "ready", lines
    assert any("wal_level does not matter" in line for line in lines)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select to_regnamespace('sync')").fetchone()[0] is None, "read-only"


def test_doctor_names_missing_privileges_with_the_grant(new_db) -> None:
    dsn = new_db("doc")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PG_TABLES)
        conn.execute("drop role if exists doc_bridge; create role doc_bridge login password 'pw'")
        conn.execute("grant select, trigger on a to doc_bridge; grant select on b to doc_bridge")
        conn.execute("revoke create on database " + conn.info.dbname + " from public")
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info.update(user="doc_bridge", password="pw")
    code, lines = doctor.report(pg_config(psycopg.conninfo.make_conninfo(**info)))
    assert code == 1
    assert '    fix: GRANT INSERT, UPDATE, DELETE ON TABLE "public"."b" TO "doc_bridge";' in lines
    assert any(line.startswith("    fix: GRANT CREATE ON DATABASE") for line in lines)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop owned by doc_bridge; drop role doc_bridge")


def test_doctor_reports_an_unreachable_peer_and_goes_on() -> None:
    cfg = pg_config("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    code, lines = doctor.report(cfg)
    assert code == 1 and lines[0].startswith("portal: error: cannot check this peer")


# --- SQL Server (scripted driver) ------------------------------------------------------------


class DoctorConn(Conn):
    def getinfo(self, kind: int) -> str:
        assert kind == doctor.SQL_DRIVER_VER
        return "18.03.0001"


def fake_pyodbc(respond: Any, log: list[Any]) -> Any:
    return types.SimpleNamespace(
        connect=lambda s, autocommit=False, timeout=0: DoctorConn(respond, log, autocommit,
                                                                   timeout),
        drivers=lambda: ["ODBC Driver 18 for SQL Server"])


def mssql_config(dsn: str) -> config.Config:
    return config.parse({
        "hub": "portal",
        "peers": {"portal": {"dialect": "postgres", "dsn": "postgresql://x"},
                  "clinic": {"dialect": "sqlserver", "dsn": dsn}},
        "links": [{"name": "p", "a": {"peer": "clinic", "table": "dbo.patients"},
                   "b": {"peer": "portal", "table": "patients"}, "key": ["code"],
                   "direction": "both"}],
    })


def mssql_responder(skew: float = 0, **kw: Any) -> Any:
    base = db_responder(**kw)

    def respond(sql: str, params: tuple[Any, ...]) -> Any:
        if "SERVERPROPERTY('ProductVersion')" in sql:
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=skew)
            return [("16.0.4135.4", now, "bridge")]
        if "FROM sys.columns AS c" in sql:
            return [("code", "nvarchar", 40, 0, 0, False, "Latin1_General_100_BIN2", False),
                    ("name", "nvarchar", -1, 0, 0, True, "Latin1_General_100_BIN2", False)]
        if "is_primary_key = 1" in sql:
            return [("code",)]
        return base(sql, params)

    return respond


def run_mssql(monkeypatch: pytest.MonkeyPatch, dsn: str, respond: Any) -> tuple[int, list[str]]:
    log: list[Any] = []
    monkeypatch.setattr(odbc, "import_pyodbc", lambda: fake_pyodbc(respond, log))
    cfg = mssql_config(dsn)
    checks = [c for c in doctor.run(cfg) if c.peer == "clinic"]
    assert all(sql.lstrip().startswith(("SELECT", "SET LOCK_TIMEOUT", "--"))
               for sql, _ in log), "doctor only reads"
    return doctor.report(cfg, iter(checks))


DSN = "mssql://bridge:pw@db:1433/clinic?driver=ODBC+Driver+18+for+SQL+Server"


def test_doctor_sqlserver_ready_prints_versions_and_text_key_warning(monkeypatch) -> None:
    code, lines = run_mssql(monkeypatch, DSN, mssql_responder())
    assert code == 0, lines
    assert ("clinic: ok: SQL Server 16.0.4135.4; ODBC driver ODBC Driver 18 for SQL Server "
            "18.03.0001; database user bridge") in lines
    assert any("trailing spaces" in line for line in lines), "text key, even under BIN2"


def test_doctor_sqlserver_problems_come_with_their_statements(monkeypatch) -> None:
    dsn = DSN + "&TrustServerCertificate=yes&Encrypt=no"
    code, lines = run_mssql(monkeypatch, dsn, mssql_responder(
        skew=90, compat=120, snapshot="OFF", ct=(True, 2, "DAYS"),
        perms={"[dbo].[patients] VIEW CHANGE TRACKING": 0}))
    assert code == 1
    for fix in ("ALTER DATABASE [clinic] SET COMPATIBILITY_LEVEL = 130;",
                "ALTER DATABASE [clinic] SET ALLOW_SNAPSHOT_ISOLATION ON;",
                "ALTER DATABASE [clinic] SET CHANGE_TRACKING (CHANGE_RETENTION = 7 DAYS);",
                "GRANT VIEW CHANGE TRACKING ON OBJECT::[dbo].[patients] TO [bridge];"):
        assert f"    fix: {fix}" in lines, fix
    text = "\n".join(lines)
    assert "Encrypt=no" in text and "TrustServerCertificate=yes" in text
    assert "clock is 90 s off" in text


def test_doctor_is_a_cli_subcommand(new_db, tmp_path, capsys) -> None:
    dsn = new_db("doc")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PG_TABLES)
    path = tmp_path / "sb.toml"
    path.write_text(f'[peers.portal]\ndsn = "{dsn}"\n\n[[links]]\nname = "ab"\n'
                    'a = { peer = "portal", table = "public.a" }\n'
                    'b = { peer = "portal", table = "public.b" }\nkey = ["id"]\n'
                    'direction = "a_to_b"\n')
    assert cli.main(["--config", str(path), "doctor"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("ready")
