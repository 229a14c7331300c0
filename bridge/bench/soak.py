"""`syncbridge bench --only soak`: the bridge's memory over a long steady load (issue 16).

Issue 16 asks that the bridge's RSS stay under 150 MB under the bulk workload and
be flat over a 30-minute soak. This part runs the bench's one a_to_b link with a
writer that upserts ROWS_PER_TX rows per transaction over KEYS keys, paced to
`--rate` rows/s for `--seconds`, and samples the bridge process's memory from
/proc every `--sample-seconds`: VmRSS (what the issue's ceiling is about) and
RssAnon (the heap part of it, without mapped files). It prints every sample as
it is taken, and the figures: RSS at the first sample after the warm-up
(`--warmup-seconds`: start-up, the pools filling and the first pass over the
keys are not growth) and at the end, the least-squares slope of RSS over the
samples after the warm-up in MB per hour, the peak, the bridge's CPU, and
whether every row arrived (the sink equals the source at the end).
"""

from __future__ import annotations

import argparse
import math
import threading
import time

import psycopg

from syncbridge.bridge.bench.core import start_bridge_active, with_payload
from syncbridge.bridge.bench.links import cpu_seconds
from syncbridge.bridge.bench.native import status_kb
from syncbridge.bridge.bench.rig import Rig
from syncbridge.engine import sqlfiles

SQL = sqlfiles.Queries("bench/soak.sql")
KEYS = 100_000  # the upserts cycle over ids 1..KEYS: the sink's table stops growing
ROWS_PER_TX = 5
DRAIN_TIMEOUT = 120.0  # seconds after the writer stops for the queue to empty


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour; NaN under two."""
    if len(samples) < 2:
        return math.nan
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return math.nan
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 3600


class Soak:
    """One soak on the bench's rig (core.Bench's link on bench_items)."""

    def __init__(self, rig: Rig, args: argparse.Namespace) -> None:
        if args.rate < ROWS_PER_TX or args.seconds <= 0 or args.sample_seconds <= 0:
            raise SystemExit(f"syncbridge bench: soak needs --rate >= {ROWS_PER_TX}, "
                             "--seconds > 0 and --sample-seconds > 0")
        self.rig, self.args = rig, args
        self.written = 0
        self.stop = threading.Event()

    def _writer(self) -> None:
        """Upserts of ROWS_PER_TX consecutive keys a transaction, on time: behind, it
        writes without waiting until it has caught up."""
        upsert = with_payload("upsert", queries=SQL)
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            began = time.monotonic()
            while not self.stop.is_set():
                lo = self.written % KEYS + 1
                c.execute(upsert, (lo, min(lo + ROWS_PER_TX - 1, KEYS)))
                self.written += min(ROWS_PER_TX, KEYS - lo + 1)
                ahead = began + self.written / self.args.rate - time.monotonic()
                if ahead > 0:
                    self.stop.wait(ahead)

    def _sample(self, pid: int, since: float) -> tuple[float, float, float]:
        """(seconds since the start, VmRSS MB, RssAnon MB) of the bridge, printed."""
        kb = status_kb(pid)
        at = time.monotonic() - since
        rss, anon = kb.get("VmRSS", 0) / 1024, kb.get("RssAnon", 0) / 1024
        print(f"  soak {at:7.0f}s  rss_mb {rss:6.1f}  anon_mb {anon:6.1f}  "
              f"rows {self.written:,}", flush=True)
        return at, rss, anon

    def run(self) -> dict[str, float]:
        start_bridge_active(self.rig)
        pid = self.rig.proc.pid
        writer = threading.Thread(target=self._writer, daemon=True)
        cpu_before, began = cpu_seconds(pid), time.monotonic()
        writer.start()
        samples = []
        try:
            while (now := time.monotonic() - began) < self.args.seconds:
                samples.append(self._sample(pid, began))
                time.sleep(min(self.args.sample_seconds, max(self.args.seconds - now, 0.01)))
            samples.append(self._sample(pid, began))
        finally:
            self.stop.set()
            writer.join()
        cpu, took = cpu_seconds(pid) - cpu_before, time.monotonic() - began
        self.rig.wait_drained(DRAIN_TIMEOUT)
        equal = self.rig.equal("bench_items", ["id"])
        self.rig.stop_bridge()
        return self._figures(samples, cpu, took, equal)

    def _figures(self, samples: list[tuple[float, float, float]], cpu: float, took: float,
                 equal: bool) -> dict[str, float]:
        warmup = min(self.args.warmup_seconds, self.args.seconds / 3)
        steady = [s for s in samples if s[0] >= warmup] or samples[-1:]
        out: dict[str, float] = {
            "seconds": round(took, 1), "warmup_seconds": warmup,
            "offered_rows_per_s": float(self.args.rate), "rows_written": self.written,
            "rss_start_mb": steady[0][1], "rss_end_mb": samples[-1][1],
            "rss_peak_mb": max(s[1] for s in samples),
            "rss_growth_mb_per_hour": slope_per_hour([(t, r) for t, r, _ in steady]),
            "anon_growth_mb_per_hour": slope_per_hour([(t, a) for t, _, a in steady]),
        }
        for minute in (3, 10, 20, 30):  # the checkpoints, where the run reached them
            at = [s for s in samples if s[0] >= minute * 60]
            if at:
                out[f"rss_min{minute}_mb"] = at[0][1]
        out.update({"bridge_cpu_s_per_1k_rows": cpu / max(self.written, 1) * 1000,
                    "bridge_cpu_share_of_core": cpu / took,
                    "sink_equals_source": int(equal)})
        return out
