"""`syncbridge bench-check`: the reconciliation figures, measured end to end.

(check)      `check` of two equal `bench_items` tables of --rows rows, seconds, and
             reladiff on the same pair in the same run (optional extra `bench`);
(check_diff) `check` after --diffs random differences on side b (deletes, inserts,
             changed text / numeric / jsonb / timestamptz / int): all found, no others;
(backfill)   `backfill` of --rows rows into an empty sink while a live stream of
             --rate single-row transactions/s runs on the source: rows/s to the sink,
             and p50/p99 lag of the live rows (source commit to sink apply, one clock);
(seed)       `seed` of the same --rows rows into the empty sink (the live stream runs
             and queues meanwhile), beside `backfill` (as above) and
             `pg_dump --data-only | psql` of the same table: rows/s of each, and the ratios.
Each figure is the median of --runs runs. Embedded PostgreSQL unless --dsn-a/--dsn-b.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from syncbridge.bridge.bench.core import SCHEMA, with_payload
from syncbridge.bridge.bench.rig import Rig, wait_until
from syncbridge.bridge.demo import create_databases
from syncbridge.engine import sqlfiles
from syncbridge.engine.embedded import POSTGRES_BIN_PATH, EmbeddedPostgres
from syncbridge.engine.reconcile import backfill, check, seed
from syncbridge.engine.validate import shapes

LIVE_IDS = 10_000_001  # bench_seq starts here: live rows are told apart from backfilled ones
SQL = sqlfiles.Queries("bench/check.sql")
LINK = {"name": "bench_items", "a": {"peer": "a", "table": "bench_items"},
        "b": {"peer": "b", "table": "bench_items"}, "key": ["id"], "direction": "a_to_b"}


def _say(msg: str) -> None:
    print(msg, flush=True)


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


class BenchCheck:
    def __init__(self, args: argparse.Namespace, rig: Rig) -> None:
        self.args, self.rig = args, rig
        self.config = rig.config

    def load(self) -> None:
        for side in ("a", "b"):
            self.rig.execute(side, SCHEMA)
            started = time.monotonic()
            self.rig.execute(side, with_payload("load", queries=SQL), (self.args.rows,))
            self.rig.execute(side, "vacuum analyze bench_items")
            _say(f"loaded {self.args.rows:,} rows into side {side} "
                 f"in {time.monotonic() - started:.1f}s")
        self.rig.execute("b", SQL["arrivals"])
        self.rig.setup()
        self.shapes = shapes(self.config, ["bench_items"])

    def run_check(self) -> check.Result:
        [res] = asyncio.run(check.check_all(self.config, self.shapes, [], settle=30))
        return res

    # -- parts --------------------------------------------------------------------------

    def part_check(self) -> dict[str, Any]:
        ours, theirs = [], []
        for _ in range(self.args.runs):
            res = self.run_check()
            assert res.verdict == "equal", f"bench tables differ: {res.diffs[:5]}"
            ours.append(res.seconds)
            t = self.reladiff()
            if t is not None:
                theirs.append(t)
        out = {"check_s": _median(ours)}
        line = f"(check) equal {self.args.rows:,} rows: {out['check_s']:.2f}s"
        if theirs:
            out["reladiff_s"] = _median(theirs)
            line += (f"; reladiff {out['reladiff_s']:.2f}s; ratio reladiff/check "
                     f"{out['reladiff_s'] / out['check_s']:.2f}x")
        else:
            line += "; reladiff not installed (pip install 'syncbridge[bench]'): skipped"
        _say(line)
        return out

    def reladiff(self) -> float | None:
        try:
            import reladiff
        except ImportError:
            return None
        cols = ("account_id", "status", "amount", "payload", "updated_at")
        t1 = reladiff.connect_to_table(self.rig.dsn["a"], "bench_items", "id",
                                       thread_count=check.WORKERS)
        t2 = reladiff.connect_to_table(self.rig.dsn["b"], "bench_items", "id",
                                       thread_count=check.WORKERS)
        started = time.monotonic()
        try:
            found = list(reladiff.diff_tables(t1, t2, extra_columns=cols, threaded=True,
                                              max_threadpool_size=check.WORKERS))
        finally:  # its sessions stay idle in transaction and would block TRUNCATE later
            for t in (t1, t2):
                t.database.close()
        took = time.monotonic() - started
        assert not found, f"reladiff found differences in equal tables: {found[:3]}"
        return took

    def part_check_diff(self) -> dict[str, Any]:
        expected = self.make_diffs()
        times = []
        for _ in range(self.args.runs):
            res = self.run_check()
            found = {d.key_a["id"]: d.kind for d in res.diffs}
            assert found == expected, (
                f"missed {sorted(set(expected) - set(found))[:10]}, "
                f"extra {sorted(set(found) - set(expected))[:10]}")
            times.append(res.seconds)
        out = {"check_diff_s": _median(times), "found": len(expected)}
        _say(f"(check_diff) {len(expected)} differences in {self.args.rows:,} rows: all found, "
             f"no others, {out['check_diff_s']:.2f}s")
        return out

    def make_diffs(self) -> dict[int, str]:
        """Seeded differences on side b (no capture there on an a_to_b link)."""
        rnd = random.Random(100)
        ids = rnd.sample(range(1, self.args.rows + 1), self.args.diffs)
        changes = ["status = 'changed'", "amount = amount + 0.01", "payload = payload || "
                   "'{\"x\": 1}'", "updated_at = updated_at + interval '1 microsecond'",
                   "account_id = account_id + 1"]
        expected: dict[int, str] = {}
        with psycopg.connect(self.rig.dsn["b"], autocommit=True) as c:
            for n, i in enumerate(ids):
                if n % 3 == 0:
                    c.execute("delete from bench_items where id = %s", (i,))
                    expected[i] = "missing_on_b"
                elif n % 3 == 1:
                    new = self.args.rows + 1 + n
                    c.execute("insert into bench_items (id, account_id, status, amount, payload) "
                              "values (%s, 1, 'extra', 1, '{}')", (new,))
                    expected[new] = "missing_on_a"
                else:
                    c.execute(f"update bench_items set {changes[n % len(changes)]} "
                              "where id = %s", (i,))
                    expected[i] = "different"
        return expected

    def part_backfill(self) -> dict[str, Any]:
        rates, p50s, p99s = [], [], []
        self.rig.start_bridge()
        try:
            for _ in range(self.args.runs):
                rate, lags = self.one_backfill()
                rates.append(rate)
                p50s.append(statistics.quantiles(lags, n=100)[49])
                p99s.append(statistics.quantiles(lags, n=100)[98])
        finally:
            self.rig.stop_bridge()
        out = {"backfill_rows_s": _median(rates), "live_p50_ms": _median(p50s),
               "live_p99_ms": _median(p99s)}
        _say(f"(backfill) {self.args.rows:,} rows: {out['backfill_rows_s']:,.0f} rows/s to the "
             f"sink; live stream at {self.args.rate} tx/s meanwhile: p50 "
             f"{out['live_p50_ms']:.1f} ms, p99 {out['live_p99_ms']:.1f} ms")
        return out

    def part_seed(self) -> dict[str, Any]:
        seeds, fills, dumps = [], [], []
        self.rig.start_bridge()
        try:
            for _ in range(self.args.runs):
                seeds.append(self.one_seed())
                fills.append(self.one_backfill()[0])
                dumps.append(self.one_dump())
                _say(f"  run {len(seeds)}: seed {seeds[-1]:,.0f}, backfill {fills[-1]:,.0f}, "
                     f"pg_dump | psql {dumps[-1]:,.0f} rows/s")
        finally:
            self.rig.stop_bridge()
        out = {"seed_rows_s": _median(seeds), "backfill_rows_s": _median(fills),
               "pg_dump_psql_rows_s": _median(dumps)}
        _say(f"(seed) {self.args.rows:,} rows: seed {out['seed_rows_s']:,.0f} rows/s, backfill "
             f"{out['backfill_rows_s']:,.0f} rows/s, pg_dump | psql "
             f"{out['pg_dump_psql_rows_s']:,.0f} rows/s; seed / backfill "
             f"{out['seed_rows_s'] / out['backfill_rows_s']:.1f}x, pg_dump | psql / seed "
             f"{out['pg_dump_psql_rows_s'] / out['seed_rows_s']:.2f}x")
        return out

    def empty_sink(self) -> None:
        """The sink table empty and nothing queued: the state every part starts from."""
        self.rig.execute("b", "truncate bench_items, bench_arrivals")
        self.rig.execute("a", "delete from bench_items where id >= %s", (LIVE_IDS,))
        self.rig.wait_drained(120)
        self.rig.execute("b", "truncate bench_items, bench_arrivals")

    def one_seed(self) -> float:
        """`seed` with the live stream running (it queues, then drains after the handover).
        The link is paused before the stream starts, as README says: else the bridge would
        apply the first live rows to the sink before the seed pauses it, and be refused."""
        self.empty_sink()
        self.rig.execute("a", "select sync.pause('bench_items', 'seeding')")
        stop = threading.Event()
        writer = threading.Thread(target=self.live_writer, args=(stop,))
        writer.start()
        try:
            run = seed.seed(self.config, self.shapes["bench_items"], progress=True)
        finally:
            stop.set()
            writer.join()
        self.rig.wait_drained(120)
        return run.total / run.seconds

    def one_dump(self) -> float:
        """`pg_dump --data-only -t bench_items | psql` into the empty sink table."""
        self.empty_sink()
        started = time.monotonic()
        dump = subprocess.Popen([str(POSTGRES_BIN_PATH / "pg_dump"), "--data-only",
                                 "--table=public.bench_items", self.rig.dsn["a"]],
                                stdout=subprocess.PIPE)
        load = subprocess.run([str(POSTGRES_BIN_PATH / "psql"), "-q", "-v", "ON_ERROR_STOP=1",
                               "-o", "/dev/null", self.rig.dsn["b"]], stdin=dump.stdout,
                              check=True)
        dump.stdout.close()
        assert dump.wait() == 0 and load.returncode == 0
        took = time.monotonic() - started
        have = self.rig.query("b", "select count(*) from bench_items")[0][0]
        return have / took

    def one_backfill(self) -> tuple[float, list[float]]:
        self.empty_sink()
        stop = threading.Event()
        writer = threading.Thread(target=self.live_writer, args=(stop,))
        writer.start()
        started = time.monotonic()
        try:
            backfill.backfill(self.config, self.shapes["bench_items"], restart=True,
                              chunk=self.args.chunk, max_pending=self.args.max_pending,
                              progress=True)
            wait_until(lambda: self.rig.query("b", "select count(*) from bench_items "
                                                   "where id < %s", (LIVE_IDS,))[0][0]
                       >= self.args.rows, 600, "the backfill to land", 0.1)
            took = time.monotonic() - started
        finally:
            stop.set()
            writer.join()
        self.rig.wait_drained(120)
        lags = [r[0] for r in self.rig.query(
            "b", "select extract(epoch from arrived_at - written_at) * 1000 from bench_arrivals")]
        return self.args.rows / took, lags

    def live_writer(self, stop: threading.Event) -> None:
        """--rate single-row inserts per second on the source, evenly spaced."""
        gap = 1.0 / self.args.rate
        nxt = time.monotonic()
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            while not stop.is_set():
                c.execute("insert into bench_items (id, account_id, status, amount, payload) "
                          "values (nextval('bench_seq'), 1, 'live', 1, '{}')")
                nxt += gap
                time.sleep(max(0.0, nxt - time.monotonic()))


def main(args: argparse.Namespace) -> int:
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="syncbridge-bench-check-"))
    pg = None
    if args.dsn_a and args.dsn_b:
        dsn_a, dsn_b = args.dsn_a, args.dsn_b
    else:
        pg = EmbeddedPostgres(workdir / "pg").start()
        create_databases(pg.dsn(), ["bench_check_a", "bench_check_b"])
        dsn_a, dsn_b = pg.dsn("bench_check_a"), pg.dsn("bench_check_b")
    rig = Rig(workdir, dsn_a, dsn_b, [LINK])
    try:
        bench = BenchCheck(args, rig)
        bench.load()
        _say(f"runs: {args.runs} (medians)")
        for part in ("check", "check_diff", "backfill", "seed"):
            if part in parts:
                getattr(bench, f"part_{part}")()
        return 0
    finally:
        rig.close()
        if pg is not None:
            pg.destroy()
