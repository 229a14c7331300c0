"""`syncbridge bench --only links`: many busy links on one bridge (issue 16).

Issue 16 asks that cost grow linearly: 50 links each carrying 1,000 rows/s keep
lag p99 under a second on one bridge, and the bridge's CPU per row does not grow
with the number of idle links. This part builds `--links` busy and `--idle-links`
idle a_to_b links, each its own table of bench_items' shape, runs one bridge
process (the rig's, as the other parts do) and drives writers that insert
several rows per statement into one table at a time, paced to `--rate` rows/s
per link for `--seconds`. It reports
- lag: commit to apply of every row, stamped on the sink by a statement trigger
  with the server's clock, as the latency part does (p50/p99/max);
- rows/s written at the source and applied on the sink (first write to last apply);
- the bridge's CPU seconds per 1,000 rows (utime + stime of its process from
  /proc, read when it has settled after start and when the last row arrived),
  the share of a core it used meanwhile, and its peak RSS;
- rows per batch, and rows missing on the sink (0, or the bench failed).
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

from syncbridge.bridge.bench.core import start_bridge_active, with_payload
from syncbridge.bridge.bench.native import RssSampler
from syncbridge.bridge.bench.rig import Rig, wait_until
from syncbridge.engine import sqlfiles

SQL = sqlfiles.Queries("bench/links.sql")
ROWS_PER_STATEMENT = 10  # each write is one multi-row insert into one link's table
WRITERS = 4  # writer threads (connections); each takes every WRITERS-th busy link
SETTLE_CPU = 0.02  # bridge CPU seconds per SETTLE_EVERY below which it has settled
SETTLE_EVERY = 0.5
ARRIVAL_TIMEOUT = 300.0  # seconds after the writers stop for the last row to arrive
TICKS = os.sysconf("SC_CLK_TCK")


def table_name(i: int) -> str:
    return f"bench_links_{i:03d}"


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from its third field on (the state; stat(5) numbers it 3)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread of it) from /proc/<pid>/stat."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of stat(5)


def postmasters(dsns: list[str]) -> set[int]:
    """The local PostgreSQL servers behind `dsns` (a backend's parent); empty when one
    is not on this machine."""
    found = set()
    for dsn in dsns:
        with psycopg.connect(dsn) as c:  # read while the backend lives
            backend = c.execute("select pg_backend_pid()").fetchone()[0]
            try:
                with open(f"/proc/{backend}/comm") as f:
                    local = f.read().strip() == "postgres"
                parent = int(_stat(backend)[1])
            except OSError:  # another machine's (or another namespace's) server
                return set()
        if not local:  # that pid here is some other program
            return set()
        found.add(parent)
    return found


def server_cpu_seconds(postmaster: int) -> float:
    """CPU of a server: its live processes' utime + stime, and its reaped ones' (the
    postmaster's cutime + cstime), so a backend that exits meanwhile still counts."""
    own = _stat(postmaster)
    total = sum(int(x) for x in own[11:15])
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat(int(entry))
            except OSError:  # gone meanwhile: its time is in the postmaster's cutime
                continue
            if fields[1] == str(postmaster):
                total += int(fields[11]) + int(fields[12])
    return total / TICKS


class LinksBench:
    """--links busy and --idle-links idle links between the two databases, one bridge."""

    def __init__(self, args: argparse.Namespace, dsn_a: str, dsn_b: str,
                 workdir: Path) -> None:
        if args.links < 1 or args.idle_links < 0 or args.rate < 1:
            raise SystemExit("syncbridge bench: links needs --links >= 1, --rate >= 1 and "
                             "--idle-links >= 0")
        self.args = args
        self.tables = [table_name(i) for i in range(args.links + args.idle_links)]
        self.rig = Rig(workdir, dsn_a, dsn_b, [{
            "name": t, "a": {"peer": "a", "table": t}, "b": {"peer": "b", "table": t},
            "key": ["id"], "direction": "a_to_b", "batch_size": args.batch_size,
            "notify": not args.no_notify,
        } for t in self.tables])

    def setup(self) -> None:
        """The tables on both sides (bench_items must exist: core.Bench.setup makes it),
        the stamp triggers on the sink, the sync schema and capture."""
        for side in ("a", "b"):
            self.rig.execute(side, SQL["drop"])
            self.rig.execute(side, SQL["arrivals"])
            with psycopg.connect(self.rig.dsn[side], autocommit=True) as c:
                for i, t in enumerate(self.tables):
                    c.execute(SQL.compose("table", table=t))
                    if side == "b":
                        c.execute(SQL.compose("arrival_trigger", table=t, link=sql.Literal(i)))
        self.rig.setup()

    def reset(self) -> None:
        self.rig.stop_bridge()
        tables = sql.SQL(", ").join(sql.Identifier(t) for t in self.tables)
        for side in ("a", "b"):
            self.rig.execute(side, SQL.compose("truncate", tables=tables))
            self.rig.execute(side, SQL["reset"])

    def run(self) -> dict[str, float]:
        """One measured run: write for --seconds, wait for every row, read the figures."""
        self.reset()
        start_bridge_active(self.rig)
        try:
            pid = self.rig.proc.pid
            self._settle(pid)
            servers = postmasters(list(self.rig.dsn.values()))
            before = self._cpu(pid, servers)
            at = time.monotonic()
            with RssSampler([pid]) as rss:
                written, wrote_s = self._write()
                wait_until(lambda: self._arrived() >= written, ARRIVAL_TIMEOUT + wrote_s,
                           "every row on the sink", 0.1)
                cpu = [b - a for a, b in zip(before, self._cpu(pid, servers), strict=True)]
                busy_s = time.monotonic() - at
            return self._figures(written, wrote_s, cpu, busy_s, rss.peak_kb)
        finally:
            self.rig.stop_bridge()

    def _settle(self, pid: int) -> None:
        """Until the bridge's start (first claim and depth sample of every link) is
        over: CPU is then the heartbeat's only, and the CPU measured is the rows'."""
        last = (time.monotonic(), cpu_seconds(pid))

        def quiet() -> bool:
            nonlocal last
            now = (time.monotonic(), cpu_seconds(pid))
            if now[0] - last[0] < SETTLE_EVERY:  # CPU over a whole window, not an instant
                return False
            used, last = now[1] - last[1], now
            return used < SETTLE_CPU

        wait_until(quiet, 60, "the bridge to settle after its start", SETTLE_EVERY / 5)

    @staticmethod
    def _cpu(pid: int, servers: set[int]) -> tuple[float, float]:
        """CPU seconds so far of the bridge, and of the servers (nan: not local)."""
        server = sum(server_cpu_seconds(p) for p in servers) if servers else math.nan
        return cpu_seconds(pid), server

    def _figures(self, written: int, wrote_s: float, cpu: list[float], busy_s: float,
                 peak_kb: int) -> dict[str, float]:
        rows, p50, p99, worst, span = self.rig.query("b", SQL["lag"])[0]
        batches = self.rig.query("b", SQL["batches"])[0][0]
        gap = self.rig.query("b", SQL["batch_gaps"])[0][0]
        return {
            "links": self.args.links, "idle_links": self.args.idle_links,
            "offered_rows_per_s": float(self.args.links * self.args.rate),
            "written_rows_per_s": written / wrote_s,
            "applied_rows_per_s": rows / float(span),
            "lag_p50_ms": float(p50), "lag_p99_ms": float(p99), "lag_max_ms": float(worst),
            "rows_written": written, "rows_applied": rows, "missing_rows": self._missing(),
            "rows_per_batch": rows / max(batches, 1),
            "link_batch_gap_p50_ms": math.nan if gap is None else float(gap),
            "bridge_cpu_s_per_1k_rows": cpu[0] / rows * 1000,
            "bridge_cpu_share_of_core": cpu[0] / busy_s,
            "servers_cpu_s_per_1k_rows": cpu[1] / rows * 1000,
            "bridge_peak_rss_mb": peak_kb / 1024,
        }

    def _arrived(self) -> int:
        return self.rig.query("b", SQL["arrived"])[0][0]

    def _missing(self) -> int:
        """Rows the sources have that their sinks lack, summed over every link table."""
        counts = {}
        for side in ("a", "b"):
            with psycopg.connect(self.rig.dsn[side], autocommit=True) as c:
                counts[side] = [c.execute(SQL.compose("count", table=t)).fetchone()[0]
                                for t in self.tables]
        return sum(abs(a - b) for a, b in zip(counts["a"], counts["b"], strict=True))

    def _write(self) -> tuple[int, float]:
        """WRITERS threads, each pacing its share of the busy links to --rate rows/s per
        link; returns the rows written and the seconds it took."""
        busy = self.args.links
        writers = max(1, min(WRITERS, busy))
        start = threading.Barrier(writers)
        with ThreadPoolExecutor(writers) as pool:
            began = time.monotonic()
            done = [pool.submit(self._writer, list(range(w, busy, writers)), start)
                    for w in range(writers)]
            written = sum(f.result() for f in done)
        return written, time.monotonic() - began

    def _writer(self, links: list[int], start: threading.Barrier) -> int:
        """Round-robin over `links`, ROWS_PER_STATEMENT rows a statement, on time: a
        writer that falls behind writes without waiting until it has caught up."""
        inserts = [with_payload("insert_rows", queries=SQL, table=self.tables[i])
                   for i in links]
        rate = self.args.rate * len(links)  # this writer's rows per second
        next_id = [1] * len(links)
        sent = 0
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            start.wait()
            began = time.monotonic()
            while time.monotonic() - began < self.args.seconds:
                j = (sent // ROWS_PER_STATEMENT) % len(links)
                c.execute(inserts[j], (next_id[j], next_id[j] + ROWS_PER_STATEMENT - 1))
                next_id[j] += ROWS_PER_STATEMENT
                sent += ROWS_PER_STATEMENT
                ahead = began + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        return sent
