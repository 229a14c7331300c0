"""The native logical replication side of `syncbridge bench --compare logical`, and what the
compare reads from the servers themselves (statement counts in their logs, process RSS).

LogicalBench runs bench/core.py's writers and pgbench against a publication on
side a and a subscription on side b in place of the bridge; logical.py (the
compare: runs, medians, ratios) drives it beside syncbridge. Its SQL is in
sql/bench/logical.sql.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from syncbridge.bridge.bench.core import SCHEMA, Bench, with_payload
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine import sqlfiles

SQL = sqlfiles.Queries("bench/logical.sql")
IDLE_SETTLE_S = 2  # after the reload: every idle session runs one command with the old setting
# log_line_prefix for the idle window: the database lets us count one engine's statements only
LOG_PREFIX = "%m [%p] db=%d "
STATEMENT_LINE = re.compile(r" db=(\S+) LOG:  (?:statement|execute [^:]*):")


class Server:
    """One cluster as the compare sees it: admin DSN, a DSN per database, its log, and its
    postmaster's pid where the server runs here (the embedded one), for its CPU."""

    def __init__(self, admin_dsn: str, log_path: Path | None, pid: int | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.log_path = log_path
        self.pid = pid

    def dsn(self, database: str) -> str:
        return urlunsplit(urlsplit(self.admin_dsn)._replace(path="/" + database))

    def admin(self, statement: str) -> list[tuple]:
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            cur = c.execute(statement)
            return cur.fetchall() if cur.description else []

    def fresh_database(self, name: str) -> str:
        self.admin(f'drop database if exists "{name}" with (force)')
        self.admin(f'create database "{name}"')
        return self.dsn(name)

    def set_statement_log(self, on: bool) -> None:
        if on:
            self.admin("alter system set log_statement = 'all'")
            self.admin(f"alter system set log_line_prefix = '{LOG_PREFIX}'")
        else:
            self.admin("alter system reset log_statement")
            self.admin("alter system reset log_line_prefix")
        self.admin("select pg_reload_conf()")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path else 0

    def statements_since(self, offset: int, database: str) -> int:
        if not self.log_path:
            return -1
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return sum(1 for m in STATEMENT_LINE.finditer(text) if m.group(1) == database)


def count_idle_statements(servers: dict[str, Server], dbs: dict[str, str],
                          seconds: float) -> dict[str, float]:
    """Statements/s per peer in the servers' logs while nothing is written."""
    for s in servers.values():
        s.set_statement_log(True)
    try:
        time.sleep(IDLE_SETTLE_S)
        start = {side: s.log_size() for side, s in servers.items()}
        time.sleep(seconds)
        counts = {side: s.statements_since(start[side], dbs[side])
                  for side, s in servers.items()}
    finally:
        for s in servers.values():
            s.set_statement_log(False)
    if any(n < 0 for n in counts.values()):
        return {side: math.nan for side in counts}
    return {side: n / seconds for side, n in counts.items()}


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat's fields after the command (field 3, the state, is [0])."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int | None]) -> float:
    """User plus system CPU seconds the processes used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        if pid is not None:
            fields = _stat(pid)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(postmaster: int) -> float:
    """CPU seconds a whole server used so far: its postmaster's, its live processes' and
    those of the processes it reaped (cutime, cstime: the autovacuum workers and sessions
    that came and went in between count too)."""
    fields = _stat(postmaster)
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    live = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if int(_stat(entry.name)[1]) == postmaster:  # ppid
                    live.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue  # ended while we looked: reaped, so counted in cutime
    try:
        return reaped + cpu_seconds([postmaster, *live])
    except FileNotFoundError:  # a process ended between the two looks: look again
        return server_cpu_seconds(postmaster)


class CpuWindow:
    """CPU seconds over a timed window (a catch-up): each server's whole (its sessions,
    walsender, apply worker, autovacuum and WAL writer) and the engine's own processes
    (the bridge; none for logical replication, whose processes are the servers'). NaN
    for a server whose processes this machine cannot see (--dsn-a/--dsn-b)."""

    def __init__(self, servers: dict[str, Server], engine: Callable[[], list[int | None]]
                 ) -> None:
        self.servers, self.engine = servers, engine
        self.seconds: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out = {side: server_cpu_seconds(s.pid) if s.pid else math.nan
               for side, s in self.servers.items()}
        out["engine"] = cpu_seconds(self.engine())
        return out

    def __enter__(self) -> CpuWindow:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        self.seconds = {k: end[k] - self._start[k] for k in end}

    def per_row_us(self, rows: int) -> dict[str, float]:
        """The compare's catchup_{source,sink,engine}_cpu_us_row: CPU microseconds per row
        of the window, server by server and the engine."""
        return {f"catchup_{name}_cpu_us_row": self.seconds[key] / rows * 1e6
                for name, key in (("source", "a"), ("sink", "b"), ("engine", "engine"))}


class IdleWindow:
    """CPU of the engine's processes (percent of one core) over the idle window."""

    def __init__(self, pids: list[int | None]) -> None:
        self.pids = pids

    def __enter__(self) -> IdleWindow:
        self.cpu, self.at = cpu_seconds(self.pids), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.percent = (cpu_seconds(self.pids) - self.cpu) / (time.monotonic() - self.at) * 100


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                out[k] = int(v.split()[0])
    return out


class RssSampler:
    """Peak of sum(VmRSS - RssShmem) over some pids, sampled in a thread."""

    def __init__(self, pids: list[int], every: float = 0.05) -> None:
        self.pids, self.every, self.peak_kb = pids, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self.pids:
                try:
                    st = status_kb(pid)
                except OSError:
                    continue
                total += st.get("VmRSS", 0) - st.get("RssShmem", 0)
            self.peak_kb = max(self.peak_kb, total)
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CompareBench(Bench):
    """Bench with a checkpoint on both servers before each pgbench pass. Fsync on and a whole
    run's WAL behind it, a timed checkpoint otherwise lands in whichever pass it likes: one run
    read 2.6x faster writes *with* capture than without."""

    def _pgbench(self, kind: str, clients: int) -> float:
        for side in ("a", "b"):
            self.rig.execute(side, "checkpoint")
        return super()._pgbench(kind, clients)


class LogicalBench(CompareBench):
    """Bench's writers and pgbench, with a publication/subscription in place of the bridge."""

    SUB = "bench_sub"

    def setup(self) -> None:
        for side in ("a", "b"):
            self.rig.execute(side, SCHEMA)
        self.rig.execute("b", SQL["arrivals"])
        self.rig.execute("a", SQL["publication"])
        self.rig.execute("b", SQL.render("subscription", sub=self.SUB,
                                         conninfo=sql.Literal(self.rig.dsn["a"])))
        self._wait_worker(True)

    def teardown(self) -> None:
        self.rig.execute("b", f"drop subscription {self.SUB}")  # drops its slot on a too

    def _set_enabled(self, on: bool, wait: bool = True) -> None:
        self.rig.execute("b", f"alter subscription {self.SUB} {'enable' if on else 'disable'}")
        if wait:
            self._wait_worker(on)

    def _apply_pid(self) -> int | None:
        rows = self.rig.query("b", "select pid from pg_stat_subscription "
                                   "where subname = %s and relid is null", (self.SUB,))
        return rows[0][0] if rows else None

    def _walsender_pid(self) -> int | None:
        rows = self.rig.query("a", "select pid from pg_stat_replication "
                                   "where application_name = %s", (self.SUB,))
        return rows[0][0] if rows else None

    def _wait_worker(self, running: bool) -> None:
        wait_until(lambda: (self._apply_pid() is not None and self._walsender_pid() is not None)
                   if running else self._apply_pid() is None,
                   60, f"the apply worker to {'start' if running else 'stop'}")

    def _wait_applied(self) -> None:
        """Everything committed on a so far is on b: a sentinel row, applied in commit order."""
        self.rig.execute("a", "insert into bench_items (id, account_id, status, amount, payload) "
                              "values (-1, 0, 'sentinel', 0, '{}')")
        wait_until(lambda: self.rig.query("b", "select count(*) from bench_items where id = -1")
                   [0][0] > 0, 120, "the sentinel row on the subscriber", 0.01)
        self.rig.execute("a", "delete from bench_items where id = -1")

    def reset(self) -> None:
        self._set_enabled(True)
        self.rig.execute("a", "truncate bench_items")
        self._wait_applied()  # the truncate too
        self.rig.execute("b", "truncate bench_arrivals")

    def catchup(self) -> dict[str, float]:
        self.reset()
        self._set_enabled(False)
        n = self.args.rows
        self._write_rows(n)
        with self.catchup_window():
            start = time.monotonic()
            self._set_enabled(True, wait=False)  # the worker's start counts, not our look for it
            took = self._wait_rows(n, n, "catch-up rows on the target") - start
        self._wait_worker(True)
        return {"rows_per_s": n / took}

    def bulk(self) -> dict[str, float]:
        self.reset()
        n = self.args.rows
        pids = [self._apply_pid(), self._walsender_pid()]
        with RssSampler([p for p in pids if p]) as rss:
            first = self._write_rows(n)
            done = self._wait_rows(n, n, "bulk rows on the target")
        return {"rows_per_s": n / (done - first), "rss_mb": rss.peak_kb / 1024}

    def latency(self) -> dict[str, float]:
        self.reset()
        self.rig.execute("a", with_payload("seed_latency"))
        self._wait_applied()
        self.rig.execute("b", "truncate bench_arrivals")
        self.rig.execute("b", "alter table bench_items enable always trigger bench_arrival_row")
        try:
            sent = self._paced_writes(self.args.rate, self.args.seconds)
            self._wait_applied()
        finally:
            self.rig.execute("b", "alter table bench_items disable trigger bench_arrival_row")
        return self._arrival_report(sent)

    def overhead(self) -> dict[str, float]:
        self.reset()
        self.rig.execute("a", with_payload("seed_overhead"))
        self._wait_applied()
        out: dict[str, float] = {}
        for mode, enabled in (("none", False), ("logical", True)):
            self._set_enabled(enabled)
            if enabled:
                self._wait_applied()  # what the disabled pass wrote, before timing
            for clients in (1, 4):
                for kind in ("insert", "update"):
                    out[f"{kind}_{clients}c_{mode}_tps"] = self._pgbench(kind, clients)
        return out
