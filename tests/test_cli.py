"""The command line as an operator meets it: --version, options anywhere, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from rigs import Rig, link, make_rig
from syncbridge.bridge.cli import EXIT_DATABASE, EXIT_ERROR, main


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_version():
    out = _cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"syncbridge {metadata.version('syncbridge')}"


def test_options_after_the_subcommand(new_db, tmp_path, capsys):
    rig = make_rig(new_db, tmp_path, "create table t (id int primary key);",
                   [link("t", "t", ["id"])])
    assert main(["status", "--config", str(rig.config_path), "--log-level", "warning"]) == 0
    after = capsys.readouterr().out
    assert main(["--config", str(rig.config_path), "status"]) == 0
    assert capsys.readouterr().out == after
    assert "link" in after


def test_options_after_do_not_lose_options_before(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["--config", str(missing), "status", "--log-level", "debug"]) == EXIT_ERROR
    assert f"config file {missing} does not exist" in capsys.readouterr().err


def test_unreachable_peer_is_one_line_and_not_a_config_error(tmp_path):
    rig = Rig(tmp_path, "postgresql://nobody@127.0.0.1:1/x", "postgresql://nobody@127.0.0.1:1/y",
              [link("t", "t", ["id"])])
    out = _cli("install", "--config", str(rig.config_path))
    assert out.returncode == EXIT_DATABASE, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("syncbridge: peer 'a': cannot connect:") and "config error" not in line


@pytest.fixture
def low_role(pg_server):
    """A login role that owns nothing and may create nothing."""
    name = "sb_low_role"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as c:
        c.execute(f"drop role if exists {name}")
        c.execute(f"create role {name} login")
    yield name
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as c:
        c.execute(f"drop owned by {name}")
        c.execute(f"drop role {name}")


def test_missing_privilege_names_the_grant_to_run(new_db, tmp_path, low_role):
    dsn_a, dsn_b = new_db("a"), new_db("b")
    schema = "create table t (id int primary key, v text);"
    owner = Rig(tmp_path / "owner", dsn_a, dsn_b, [link("t", "t", ["id"])])
    owner.execute("a", schema)
    owner.execute("b", schema)

    def as_low(dsn: str) -> str:
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(netloc=f"{low_role}@{parts.hostname}:{parts.port}"))

    from syncbridge.engine.migrate import migrate

    migrate(owner.config)  # the sync schema exists; install as a role that owns no table
    rig = Rig(tmp_path / "low", as_low(dsn_a), as_low(dsn_b), [link("t", "t", ["id"])])
    out = _cli("install", "--config", str(rig.config_path))
    assert out.returncode == EXIT_DATABASE, out.stdout + out.stderr
    [line] = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr
    assert "; as a superuser or the owner, run: " in line, line
    assert "TO <the bridge's role>;" in line


def test_exit_codes_are_documented():
    out = _cli("--help")
    for code in ("0  done", "1  differences", "2  a problem with the config", "3  a database"):
        assert code in out.stdout
