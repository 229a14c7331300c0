"""`syncbridge bench --only scaleout`: catch-up of a backlog on 1 bridge, then on 2.

Issue 16 asks that adding a bridge process adds throughput. The backlog
(--rows rows, split evenly across LINKS links of their own tables) is written
while every link is paused (sync.pause); the bridges are started and left to
share the links (bridge/sharing.py: each holds its fair share), then every link
is resumed and the figure is rows/s from the resume to the last row on the
target. Starting the bridges before the resume keeps their start-up and the
share-out out of the figure, so the two runs differ only in how many bridges
drain.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import psycopg
from psycopg import sql

from syncbridge.bridge.bench import core
from syncbridge.bridge.bench.rig import Rig, wait_until
from syncbridge.engine import sqlfiles

SQL = sqlfiles.Queries("bench/scaleout.sql")
LINKS = 8
BRIDGES = (1, 2)  # the figures printed: catch-up on one bridge, then on two


def _tables() -> list[str]:
    return [f"bench_scale_{i}" for i in range(LINKS)]


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process used so far; NaN off Linux. It tells a
    bridge-bound catch-up (the bridges' CPU near the wall time) from a server-bound one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ScaleOut:
    """A rig of LINKS a_to_b links in the bench's databases, run by 1 or 2 bridges."""

    def __init__(self, args: argparse.Namespace, dsn_a: str, dsn_b: str, workdir: Path) -> None:
        self.args = args
        self.rig = Rig(workdir, dsn_a, dsn_b, [
            {"name": t, "a": {"peer": "a", "table": t}, "b": {"peer": "b", "table": t},
             "key": ["id"], "direction": "a_to_b", "batch_size": args.batch_size}
            for t in _tables()])
        for side in ("a", "b"):
            for t in _tables():
                self.rig.execute(side, SQL.compose("table", table=t))
        self.rig.setup()

    def _reset(self) -> None:
        for side in ("a", "b"):
            for t in _tables():
                self.rig.execute(side, SQL.compose("clear", table=t))
            self.rig.execute(side, SQL["reset_sync"])

    def _backlog(self, per_link: int) -> None:
        fills = {t: SQL.compose("fill", table=t,
                                payload=core.SQL.compose("payload", g=sql.SQL("g")))
                 for t in _tables()}
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            for t in _tables():
                c.execute(SQL["pause"], (t,))
            for lo in range(1, per_link + 1, 100):
                for t in _tables():
                    c.execute(fills[t], (lo, min(lo + 99, per_link)))

    def _arrived(self) -> int:
        with psycopg.connect(self.rig.dsn["b"], autocommit=True) as c:
            return sum(c.execute(SQL.compose("count", table=t)).fetchone()[0]
                       for t in _tables())

    def catchup(self, bridges: int) -> tuple[float, float]:
        """Rows/s of the paused backlog drained by `bridges` bridges sharing the links,
        and the bridges' CPU seconds per wall second meanwhile."""
        self._reset()
        per_link = max(100, self.args.rows // LINKS)
        self._backlog(per_link)
        procs = [self.rig.start_bridge() for _ in range(bridges)]
        holders = SQL["holders"]
        wait_until(lambda: self.rig.query("a", holders)[0] == (LINKS, bridges), 120,
                   f"{bridges} bridge(s) sharing the {LINKS} links")
        cpu = sum(_cpu_seconds(p.pid) for p in procs)
        start = time.monotonic()
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            for t in _tables():
                c.execute(SQL["resume"], (t,))
        total = per_link * LINKS
        wait_until(lambda: self._arrived() >= total, 600, "the backlog on the target", 0.05)
        took = time.monotonic() - start
        cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu
        for proc in procs:
            self.rig.proc = proc
            self.rig.stop_bridge()
        return total / took, cpu / took


def scaleout(args: argparse.Namespace, dsn_a: str, dsn_b: str, workdir: Path
             ) -> dict[str, float]:
    """Both figures of one run: catch-up rows/s on one bridge and on two."""
    bench = ScaleOut(args, dsn_a, dsn_b, workdir)
    figures: dict[str, float] = {}
    try:
        for n in BRIDGES:
            name = f"{n}_bridge{'s' if n > 1 else ''}"
            figures[f"rows_per_s_{name}"], figures[f"bridge_cpu_per_s_{name}"] = \
                bench.catchup(n)
    finally:
        bench.rig.close()
    figures["speedup"] = figures["rows_per_s_2_bridges"] / figures["rows_per_s_1_bridge"]
    return figures
