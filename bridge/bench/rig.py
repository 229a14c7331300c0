"""The shared local lab: two Postgres databases, a config, and a bridge process.

This is the local two-cluster rig used by `syncbridge demo` (bridge/demo.py),
the benchmarks (bridge/bench/core.py, check.py, logical.py) and the test suite:
tests import it too (tests/rigs.py, tests/heal_support.py and many test files
use `Rig`, `wait_until`, `toml_value`, `toml_links`), so its API is stable —
change a name or a signature here only together with every caller.

The bridge always runs as a separate `syncbridge run` process here, exactly
as an operator runs it, so that killing it is a real crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from syncbridge.bridge.units import BRIDGE_ENVIRONMENT
from syncbridge.engine import config as config_mod
from syncbridge.engine.install import install
from syncbridge.engine.migrate import migrate
from syncbridge.engine.postgres import session as pg_session


def toml_links(links: list[dict[str, Any]]) -> str:
    out = []
    for link in links:
        out.append("[[links]]")
        for k, v in link.items():
            out.append(f"{k} = {toml_value(v)}")
        out.append("")
    return "\n".join(out)


def toml_value(v: Any) -> str:
    """One TOML value (string, number, bool, list, inline table)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + " }"
    raise TypeError(v)


def wait_until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll until pred() is true; raise TimeoutError naming what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Rig:
    def __init__(self, workdir: Path, dsn_a: str, dsn_b: str, links: list[dict[str, Any]],
                 bridge_settings: dict[str, Any] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dsn = {"a": dsn_a, "b": dsn_b}
        self.config_path = self.workdir / "syncbridge.toml"
        # canaries (op C signals every few seconds) are off unless a test asks: tests
        # count signals, batches and queue rows exactly
        bridge_settings = {"canary_interval": 0, **(bridge_settings or {})}
        settings = "".join(f"{k} = {toml_value(v)}\n" for k, v in bridge_settings.items())
        self.config_path.write_text(
            'hub = "a"\n\n[bridge]\n' + settings + "\n"
            f'[peers.a]\ndialect = "postgres"\ndsn = {toml_value(dsn_a)}\n\n'
            f'[peers.b]\ndialect = "postgres"\ndsn = {toml_value(dsn_b)}\n\n' + toml_links(links)
        )
        self.proc: subprocess.Popen | None = None
        self.procs: list[subprocess.Popen] = []
        self.log_path = self.workdir / "bridge.log"

    @property
    def config(self) -> config_mod.Config:
        return config_mod.load(self.config_path)

    def execute(self, side: str, statement: str, params: Any = None) -> None:
        with psycopg.connect(self.dsn[side], autocommit=True) as c:
            c.execute(statement, params)

    def query(self, side: str, statement: str, params: Any = None) -> list[tuple]:
        with psycopg.connect(self.dsn[side], autocommit=True) as c:
            return c.execute(statement, params).fetchall()

    def setup(self) -> list[str]:
        migrate(self.config)
        return list(install(self.config))

    def start_bridge(self, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """A `syncbridge run` process in the systemd unit's environment (bridge/units.py
        BRIDGE_ENVIRONMENT; this process's environment and `extra_env` override it)."""
        env = {**BRIDGE_ENVIRONMENT, **os.environ, **(extra_env or {})}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncbridge.bridge.cli", "--config", str(self.config_path),
             "run"], stdout=log, stderr=log, env=env,
        )
        self.proc = proc
        self.procs.append(proc)
        return proc

    def stop_bridge(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
        return proc.wait(timeout)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)

    def rows(self, side: str, table: str, key: list[str]) -> list[tuple]:
        schema, _, name = table.rpartition(".")
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema or "public"), sql.Identifier(name))
        order = sql.SQL(", ").join(sql.Identifier(k) for k in key)
        with psycopg.connect(self.dsn[side]) as c:
            query = sql.SQL("select * from {} order by {}").format(ident, order)
            return c.execute(query).fetchall()

    def texts(self, side: str, table: str, key: list[str]) -> list[tuple]:
        """Every column's text representation (NULL stays None), in pinned session settings:
        the exact comparison, unlike Python values (1.5 == 1.50, JSON null == None)."""
        schema, _, name = table.rpartition(".")
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema or "public"), sql.Identifier(name))
        with pg_session.connect(self.dsn[side]) as c:
            cols = [r[0] for r in c.execute(
                "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 "
                "and not attisdropped order by attnum", (ident.as_string(c),)).fetchall()]
            query = sql.SQL("select {} from {} t order by {}").format(
                sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(x)) for x in cols),
                ident, sql.SQL(", ").join(sql.Identifier(k) for k in key))
            return c.execute(query).fetchall()

    def equal(self, table: str, key: list[str], table_b: str | None = None) -> bool:
        """Equal by representation, column for column."""
        return self.texts("a", table, key) == self.texts("b", table_b or table, key)

    def wait_equal(self, tables: dict[str, list[str]], timeout: float = 30) -> None:
        for table, key in tables.items():
            wait_until(lambda t=table, k=key: self.equal(t, k), timeout, f"{table} to converge")

    def queue_empty(self) -> bool:
        return all(
            self.query(s, "select count(*) from sync.queue")[0][0] == 0 for s in ("a", "b")
        )

    def wait_drained(self, timeout: float = 30) -> None:
        wait_until(self.queue_empty, timeout, "both queues to drain")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
