"""`syncbridge bench`: the figures issue #2 asks for, measured end to end.

(a) bulk: rows/s from the first source commit to the last row on the target,
    while 100,000 rows arrive as 1,000 transactions of 100 rows;
(b) latency: ~200 single-row transactions/s (70% insert, 30% update),
    source commit to target apply, p50/p95/p99/max ms. The target's clock
    stamp comes from a bench-only trigger in the same server, so both ends
    are read from one clock;
(c) catch-up: the same rows written while the bridge is stopped, then rows/s
    to drain them from bridge start;
(d) write overhead: pgbench transactions/s of inserts and updates without
    capture, with capture while the bridge drains (as logical replication's are
    measured with its subscription on), and with capture but no bridge, with
    and without NOTIFY in the trigger, at 1 and 4 clients (`_ratio_no_notify`,
    `_ratio_idle`: the trigger's own cost, apart from the drain's). The headline
    `_ratio` needs the bridge: writers notify only while it sleeps on LISTEN,
    so with none there the NOTIFY would never be paid;
(e) scaleout (only when asked): catch-up of a backlog split across 8 links,
    on 1 bridge and on 2 sharing the links (bridge/bench/scaleout.py);
(f) links (only when asked, --only links): many busy and idle links on one
    bridge, lag and the bridge's CPU per row (bench/links.py);
(g) soak (only when asked, --only soak): the bridge's RSS over a long steady
    load, its growth per hour (bench/soak.py).
Runs on the embedded PostgreSQL unless --dsn-a/--dsn-b are given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from syncbridge.bridge.bench.rig import Rig, wait_until
from syncbridge.engine import sqlfiles

SQL = sqlfiles.Queries("bench/core.sql")
SCHEMA = SQL["schema"]
PAUSED = "event=paused link=bench "
# the target's arrival stamps (sql/bench/core.sql arrivals), on only while latency runs
ARRIVALS = ("alter table bench_items {0} trigger bench_arrival_ins, "
            "{0} trigger bench_arrival_upd")  # the bridge's log line: it holds the link


def with_payload(name: str, g: str = "g", queries: sqlfiles.Queries = SQL,
                 **fields: sql.Composable | str | tuple[str, ...]) -> str:
    """The template `name` (of sql/bench/core.sql unless `queries` says otherwise), its
    {payload} the ~200-byte jsonb of row number `g` (an SQL expression, e.g. a column),
    its other fields (e.g. a table) as sqlfiles.Queries.render takes them."""
    return queries.render(name, payload=SQL.compose("payload", g=sql.SQL(g)), **fields)


# --rate and --seconds mean something else per part: None on the command line is this.
PART_DEFAULTS = {"rate": {"latency": 200, "links": 1000, "soak": 1000},
                 "seconds": {"latency": 30, "webhooks": 30, "links": 20, "soak": 1800}}


def part_args(args: argparse.Namespace, part: str) -> argparse.Namespace:
    """args with --rate and --seconds, where not given, set to `part`'s defaults (the
    latency part's for a part that has none of its own, and for --compare)."""
    out = argparse.Namespace(**vars(args))
    for option, defaults in PART_DEFAULTS.items():
        if getattr(out, option, None) is None:
            setattr(out, option, defaults.get(part, defaults["latency"]))
    return out


def start_bridge_active(rig: Rig) -> None:
    """Start the rig's bridge and wait until it leads (its drain loops are starting)."""
    rig.start_bridge()
    wait_until(lambda: rig.query(
        "a", "select count(*) from sync.bridges where role = 'active' and pid = %s",
        (rig.proc.pid,))[0][0] > 0, 30, "the bridge to become active")


class Bench:
    def __init__(self, args: argparse.Namespace, dsn_a: str, dsn_b: str, workdir: Path) -> None:
        self.args = args
        self.rig = Rig(workdir, dsn_a, dsn_b, [{
            "name": "bench", "a": {"peer": "a", "table": "bench_items"},
            "b": {"peer": "b", "table": "bench_items"}, "key": ["id"],
            "direction": args.direction, "batch_size": args.batch_size,
            "notify": not args.no_notify,
        }])
        self.links_bench: Any = None  # bench/links.py's, set up at its first run
        # what the timed part of the catch-up runs in: the compare's CPU window (native.py)
        self.catchup_window: Callable[[], AbstractContextManager] = contextlib.nullcontext

    def setup(self) -> None:
        for side in ("a", "b"):
            self.rig.execute(side, SQL["drop"])
            self.rig.execute(side, SCHEMA)
        self.rig.execute("b", SQL["arrivals"])
        self.rig.setup()

    def reset(self) -> None:
        self.rig.stop_bridge()
        for side in ("a", "b"):
            self.rig.execute(side, SQL["reset"])
        self.rig.execute("b", "truncate bench_arrivals")

    def _target_count(self) -> int:
        return self.rig.query("b", "select count(*) from bench_items")[0][0]

    def _wait_rows(self, total: int, last: int, what: str, timeout: float = 600) -> float:
        """Wait until the target holds `total` rows, the last one written (id `last`) among
        them, and return when (time.monotonic()). Each look is an index probe of that id on
        one kept connection; once it is there, a count in the same snapshot (repeatable
        read) confirms that every row is, so the time holds even for an engine that applied
        rows out of order. Counting at every look, as the timed parts did before, scanned
        up to 200,000 rows with two parallel workers and a new connection some 30 times a
        second: on two cores that poller took CPU from the engine it timed, and took more
        from syncbridge's warm catch-up, whose table already holds the cold run's rows."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.rig.dsn["b"]) as c:
            c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            c.execute("set max_parallel_workers_per_gather = 0")
            c.commit()
            while True:
                there = c.execute(SQL["row_there"], (last,)).fetchone()[0]
                at = time.monotonic()  # after the snapshot the probe took
                if there and c.execute("select count(*) from bench_items").fetchone()[0] >= total:
                    c.rollback()
                    return at
                c.rollback()
                if at > deadline:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                time.sleep(0.005)

    def _write_rows(self, n: int, after: int = 0) -> float:
        """n rows (ids after+1 ...) in transactions of 100; returns the time of the first
        commit."""
        first = 0.0
        insert = with_payload("insert_100")
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            for lo in range(after + 1, after + n + 1, 100):
                c.execute(insert, (lo, min(lo + 99, after + n)))
                first = first or time.monotonic()
        return first

    def bulk(self) -> dict[str, float]:
        self.reset()
        start_bridge_active(self.rig)
        n = self.args.rows
        first = self._write_rows(n)
        wrote = time.monotonic()
        done = self._wait_rows(n, n, "bulk rows on the target")
        return {"rows_per_s": n / (done - first), "source_rows_per_s": n / (wrote - first)}

    def catchup(self) -> dict[str, float]:
        """A backlog of --rows rows, twice. cold_rows_per_s: written with no bridge running,
        timed from starting one (its start-up, about a second of imports, connections and
        validation, counted in). rows_per_s: written while the running bridge holds the
        link paused (sync.pause), timed from sync.resume: the drain itself, as logical
        replication's is timed from enabling its subscription."""
        self.reset()
        n = self.args.rows
        self._write_rows(n)
        start = time.monotonic()
        self.rig.start_bridge()
        cold = n / (self._wait_rows(n, n, "catch-up rows on the target") - start)
        hub = self.rig.config.hub
        paused = self.rig.log_text().count(PAUSED)
        self.rig.execute(hub, "select sync.pause('bench', 'bench: a backlog builds')")
        wait_until(lambda: self.rig.log_text().count(PAUSED) > paused, 30,
                   "the bridge to pause the link")
        self._write_rows(n, after=n)
        if self._target_count() != n:
            raise RuntimeError("rows arrived while the link was paused: the catch-up "
                               "figure would not be a drain's")
        with self.catchup_window():
            start = time.monotonic()
            self.rig.execute(hub, "select sync.resume('bench')")
            took = self._wait_rows(2 * n, 2 * n, "catch-up rows on the target") - start
        return {"rows_per_s": n / took, "cold_rows_per_s": cold}

    def scaleout(self) -> dict[str, float]:
        """Catch-up of a backlog across 8 links on 1 bridge, then 2 (bench/scaleout.py)."""
        from syncbridge.bridge.bench.scaleout import scaleout

        self.reset()
        return scaleout(self.args, self.rig.dsn["a"], self.rig.dsn["b"],
                        self.rig.workdir / "scaleout")

    def latency(self) -> dict[str, float]:
        self.reset()
        self.rig.execute("a", with_payload("seed_latency"))
        start_bridge_active(self.rig)
        wait_until(lambda: self._target_count() >= 1000, 60, "seed rows")
        self.rig.execute("b", "truncate bench_arrivals")
        self.rig.execute("b", ARRIVALS.format("enable"))
        try:
            sent = self._paced_writes(self.args.rate, self.args.seconds)
            # not a count of arrivals: updates of one key in one batch arrive as one apply
            self.rig.wait_drained(60)
            wait_until(lambda: self._target_count() == self.rig.query(
                "a", "select count(*) from bench_items")[0][0], 60,
                "every latency write to arrive")
        finally:
            self.rig.execute("b", ARRIVALS.format("disable"))
        return self._arrival_report(sent)

    def _arrival_report(self, sent: int) -> dict[str, float]:
        """Commit-to-apply percentiles from the target's bench_arrivals stamps."""
        ms = [r[0] for r in self.rig.query(
            "b", "select extract(epoch from arrived_at - written_at) * 1000 from bench_arrivals"
                 " where id > 0")]
        ms = sorted(float(x) for x in ms)
        return {"tx": sent, "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95),
                "p99_ms": _pct(ms, 99), "max_ms": ms[-1]}

    def _paced_writes(self, rate: int, seconds: float) -> int:
        rnd = random.Random(7)
        next_id = 2_000_000
        sent = 0
        insert = with_payload("paced_insert", "%s::bigint")
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                if rnd.random() < 0.7:
                    next_id += 1
                    c.execute(insert, (next_id, next_id, next_id))
                else:
                    c.execute("update bench_items set status = 'paid', "
                              "updated_at = clock_timestamp() where id = %s",
                              (rnd.randint(1, 1000),))
                sent += 1
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            del elapsed
        return sent

    def webhooks(self) -> dict[str, float]:
        from syncbridge.bridge.bench.webhooks import run_webhook_bench

        self.reset()
        return run_webhook_bench(self.rig.dsn["a"], self.args.seconds, self.args.concurrency)

    def links(self) -> dict[str, float]:
        """Many links on one bridge (bridge/bench/links.py), on the same two databases."""
        from syncbridge.bridge.bench.links import LinksBench

        self.reset()
        if self.links_bench is None:
            self.links_bench = LinksBench(self.args, self.rig.dsn["a"], self.rig.dsn["b"],
                                          self.rig.workdir / "links")
            self.links_bench.setup()
        self.links_bench.args = self.args
        return self.links_bench.run()

    def soak(self) -> dict[str, float]:
        """The bridge's RSS over a long steady load (bridge/bench/soak.py)."""
        from syncbridge.bridge.bench.soak import Soak

        self.reset()
        return Soak(self.rig, self.args).run()

    def overhead(self) -> dict[str, float]:
        self.reset()
        self.rig.execute("a", with_payload("seed_overhead"))
        out: dict[str, float] = {}
        modes = [("none", None), ("capture", True), ("capture_no_notify", False),
                 ("capture_idle", True)]
        for mode, notify in modes:
            self._set_capture(notify)
            if mode == "capture":
                start_bridge_active(self.rig)
                self.rig.wait_drained(600)  # the seed's signals, before any timing
            for clients in (1, 4):
                for kind in ("insert", "update"):
                    out[f"{kind}_{clients}c_{mode}_tps"] = self._pgbench(kind, clients)
                    if mode == "capture":  # the next pass starts with nothing to drain
                        self.rig.wait_drained(600)
                    else:
                        self.rig.execute("a", "delete from sync.queue")
            self.rig.stop_bridge()
        for clients in (1, 4):
            for kind in ("insert", "update"):
                base = out[f"{kind}_{clients}c_none_tps"]
                out[f"{kind}_{clients}c_ratio"] = out[f"{kind}_{clients}c_capture_tps"] / base
                out[f"{kind}_{clients}c_ratio_no_notify"] = (
                    out[f"{kind}_{clients}c_capture_no_notify_tps"] / base)
                out[f"{kind}_{clients}c_ratio_idle"] = (
                    out[f"{kind}_{clients}c_capture_idle_tps"] / base)
        self._set_capture(not self.args.no_notify)
        return out

    def _set_capture(self, notify: bool | None) -> None:
        from syncbridge.engine.postgres import capture
        from syncbridge.engine.validate import shapes

        config = self.rig.config
        shape = shapes(config)["bench"]
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            capture.uninstall(c, shape, "a")
            if notify is not None:
                link = dataclasses.replace(shape.link, notify=notify)
                capture.install(c, dataclasses.replace(shape, link=link), "a")

    def _pgbench(self, kind: str, clients: int) -> float:
        script = {
            "insert": with_payload("pgbench_insert", "1"),
            "update": "\\set rid random(1, 100000)\nupdate bench_items set status = 'upd', "
                      "updated_at = clock_timestamp() where id = :rid;",
        }[kind]
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(script + "\n")
        from syncbridge.engine.embedded import POSTGRES_BIN_PATH

        res = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pgbench"), "-n", "-c", str(clients), "-j", str(clients),
             "-T", str(self.args.overhead_seconds), "-f", f.name, self.rig.dsn["a"]],
            capture_output=True, text=True, check=True)
        Path(f.name).unlink()
        m = re.search(r"tps = ([\d.]+)", res.stdout)
        if not m:
            raise RuntimeError(f"pgbench printed no tps: {res.stdout}{res.stderr}")
        return float(m.group(1))


def _pct(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return float("nan")
    idx = min(len(sorted_ms) - 1, max(0, round(p / 100 * len(sorted_ms)) - 1))
    return sorted_ms[idx]


def _median_report(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for part in runs[0]:
        out[part] = {k: statistics.median(r[part][k] for r in runs)
                     for k, v in runs[0][part].items() if isinstance(v, (int, float))}
    return out


def _print(title: str, report: dict[str, dict[str, Any]]) -> None:
    print(title, flush=True)
    for part, figures in report.items():
        print(f"  {part}:")
        for k, v in figures.items():
            print(f"    {k:<32} {v:,.3f}" if isinstance(v, float) else f"    {k:<32} {v}")
    print(flush=True)


def main(args: argparse.Namespace) -> int:
    if args.compare:
        from syncbridge.bridge.bench import logical as bench_logical

        return bench_logical.main(part_args(args, "latency"))
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - {"bulk", "latency", "catchup", "overhead", "webhooks",
                           "scaleout", "links", "soak"}
    if unknown:
        raise SystemExit(f"syncbridge bench: unknown part(s): {', '.join(sorted(unknown))}")
    from syncbridge.engine.embedded import EmbeddedPostgres

    workdir = Path(tempfile.mkdtemp(prefix="syncbridge-bench-"))
    pg = None
    if not (args.dsn_a and args.dsn_b):
        pg = EmbeddedPostgres(workdir / "pg", durable=args.durable).start()
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("create database bench_a")
            c.execute("create database bench_b")
    dsn_a = args.dsn_a or pg.dsn("bench_a")
    dsn_b = args.dsn_b or pg.dsn("bench_b")
    bench = Bench(args, dsn_a, dsn_b, workdir)
    runs = []
    try:
        bench.setup()
        for i in range(args.runs):
            report = {}
            for part in parts:
                bench.args = part_args(args, part)
                report[part] = getattr(bench, part)()
            _print(f"run {i + 1} of {args.runs}", report)
            runs.append(report)
        final = _median_report(runs) if args.runs > 1 else runs[-1]
        if args.runs > 1:
            _print(f"median of {args.runs} runs", final)
        if args.json:
            Path(args.json).write_text(json.dumps(final, indent=2) + "\n")
    finally:
        for rig in (bench.rig, getattr(bench.links_bench, "rig", None)):
            if rig is not None:
                rig.stop_bridge()
                rig.close()
        if pg:
            pg.destroy()
    return 0


