"""`syncbridge bench --compare logical`: syncbridge beside native logical replication (issue #16).

Both engines run the same workloads, in one run, on the same two clusters
(source a, target b; `wal_level = logical`), each engine on fresh databases:

- catchup_rows_s: --rows rows written while the engine holds the link
  (syncbridge: the running bridge has it paused by sync.pause; logical: the
  subscription disabled), then rows/s from sync.resume (enable) until the target
  has them all;
- catchup_cold_rows_s: the same with no bridge process running while the
  backlog is written, timed from starting one, so its start-up (about a second
  of imports, connections and validation) is counted in. Logical replication
  has no process of its own to start: enabling the subscription starts its
  apply worker, so its figure is its catchup_rows_s;
- bulk_rows_s: the same rows as transactions of 100, first source commit to
  last row on the target;
- latency_p50_ms / latency_p99_ms: bench.py's paced writes, commit to apply,
  stamped by a trigger on the target. Apply workers fire row triggers only,
  and only ENABLE ALWAYS / REPLICA ones, so logical gets a row-level stamp
  trigger enabled just for this workload;
- overhead_{insert,update}_c{1,4}: pgbench tps with capture / without, each
  pass after a checkpoint on both servers.
  syncbridge: capture triggers installed vs none (bench.py's measure, bridge
  stopped); logical: subscription streaming vs disabled (publication present,
  wal_level logical in both, so the figure is the cost of decoding and
  shipping alongside the writers);
- idle_statements_s: statements per second the engine sends to both peers'
  databases while idle, counted from the servers' own logs
  (`log_statement = all`, set for the window only);
- idle_cpu_pct: CPU (percent of one core) of the bridge process, or of the
  walsender plus the apply worker, over that idle window;
- catchup_{source,sink,engine}_cpu_us_row: CPU microseconds per row of the timed
  catch-up (catchup_rows_s): all of the source server's processes, the sink
  server's, and the engine's own (the bridge process; logical replication's
  walsender and apply worker are the servers' processes, so its engine figure is
  0). Where the catch-up's time goes: on a machine of few cores these compete
  for them;
- rss_mb: peak RSS during bulk. syncbridge: VmHWM of the bridge process;
  logical: VmRSS minus RssShmem (shared_buffers pages) of the walsender plus
  the apply worker, sampled every 50 ms.

ratio = syncbridge / logical, of medians.

This module is the compare itself (the runs, medians, ratios, the report);
the native logical replication harness (publication, subscription, apply
worker pids) and the server-side measures (statement counts, RSS) are in
native.py.

Without --durable the embedded server runs synchronous_commit = off, and a
walsender only ships WAL that has been flushed, i.e. every wal_writer_delay
(200 ms): logical latency then reads ~200 ms. Compare latency with --durable.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from syncbridge.bridge.bench.native import (
    CompareBench,
    CpuWindow,
    IdleWindow,
    LogicalBench,
    Server,
    count_idle_statements,
    status_kb,
)

KEYS = ("catchup_rows_s", "catchup_cold_rows_s", "bulk_rows_s", "latency_p50_ms", "latency_p99_ms",
        "overhead_insert_c1", "overhead_update_c1", "overhead_insert_c4", "overhead_update_c4",
        "idle_statements_s", "idle_cpu_pct", "rss_mb",
        "catchup_source_cpu_us_row", "catchup_sink_cpu_us_row", "catchup_engine_cpu_us_row")
CPU_KEYS = KEYS[-3:]
ENGINES = ("logical", "syncbridge")


class SyncbridgeRun:
    """bench.py's Bench on fresh databases, with the compare's extra figures."""

    def __init__(self, args: argparse.Namespace, servers: dict[str, Server], run: int,
                 workdir: Path) -> None:
        self.args, self.servers = args, servers
        self.dbs = {"a": f"sb{run}_a", "b": f"sb{run}_b"}
        dsns = {side: s.fresh_database(self.dbs[side]) for side, s in servers.items()}
        self.bench = CompareBench(args, dsns["a"], dsns["b"], workdir / f"sb{run}")

    def measure(self) -> dict[str, float]:
        b, out = self.bench, {}
        b.setup()
        cpu = CpuWindow(self.servers, lambda: [b.rig.proc.pid])
        b.catchup_window = lambda: cpu
        catchup = b.catchup()
        out["catchup_rows_s"], out["catchup_cold_rows_s"] = (catchup["rows_per_s"],
                                                               catchup["cold_rows_per_s"])
        out.update(cpu.per_row_us(self.args.rows))
        out["bulk_rows_s"] = b.bulk()["rows_per_s"]
        out["rss_mb"] = status_kb(b.rig.proc.pid)["VmHWM"] / 1024
        with IdleWindow([b.rig.proc.pid]) as idle:
            out["idle_statements_s"] = sum(count_idle_statements(
                self.servers, self.dbs, self.args.idle_seconds).values())
        out["idle_cpu_pct"] = idle.percent
        lat = b.latency()
        out["latency_p50_ms"], out["latency_p99_ms"] = lat["p50_ms"], lat["p99_ms"]
        suffix = "_ratio_no_notify" if self.args.no_notify else "_ratio"
        ov = b.overhead()
        for kind in ("insert", "update"):
            for clients in (1, 4):
                out[f"overhead_{kind}_c{clients}"] = ov[f"{kind}_{clients}c{suffix}"]
        return out

    def close(self) -> None:
        self.bench.rig.stop_bridge()
        self.bench.rig.close()
        for side, s in self.servers.items():
            s.admin(f'drop database if exists "{self.dbs[side]}" with (force)')


class LogicalRun:
    def __init__(self, args: argparse.Namespace, servers: dict[str, Server], run: int,
                 workdir: Path) -> None:
        self.args, self.servers = args, servers
        self.dbs = {"a": f"lr{run}_a", "b": f"lr{run}_b"}
        dsns = {side: s.fresh_database(self.dbs[side]) for side, s in servers.items()}
        self.bench = LogicalBench(args, dsns["a"], dsns["b"], workdir / f"lr{run}")
        self._set_up = False

    def measure(self) -> dict[str, float]:
        b, out = self.bench, {}
        b.setup()
        self._set_up = True
        cpu = CpuWindow(self.servers, lambda: [])  # its walsender and apply worker: servers'
        b.catchup_window = lambda: cpu
        out["catchup_rows_s"] = out["catchup_cold_rows_s"] = b.catchup()["rows_per_s"]
        out.update(cpu.per_row_us(self.args.rows))
        bulk = b.bulk()
        out["bulk_rows_s"], out["rss_mb"] = bulk["rows_per_s"], bulk["rss_mb"]
        with IdleWindow([b._apply_pid(), b._walsender_pid()]) as idle:
            out["idle_statements_s"] = sum(count_idle_statements(
                self.servers, self.dbs, self.args.idle_seconds).values())
        out["idle_cpu_pct"] = idle.percent
        lat = b.latency()
        out["latency_p50_ms"], out["latency_p99_ms"] = lat["p50_ms"], lat["p99_ms"]
        ov = b.overhead()
        for kind in ("insert", "update"):
            for clients in (1, 4):
                out[f"overhead_{kind}_c{clients}"] = (
                    ov[f"{kind}_{clients}c_logical_tps"] / ov[f"{kind}_{clients}c_none_tps"])
        return out

    def close(self) -> None:
        if self._set_up:
            self.bench.teardown()
        for side, s in self.servers.items():
            s.admin(f'drop database if exists "{self.dbs[side]}" with (force)')



RUNS: dict[str, Callable[..., SyncbridgeRun | LogicalRun]] = {
    "logical": LogicalRun, "syncbridge": SyncbridgeRun}


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key in KEYS:
        entry: dict = {}
        for engine in ENGINES:
            values = [r[key] for r in runs[engine]]
            entry[engine] = {"median": statistics.median(values), "runs": values}
        lr, sb = entry["logical"]["median"], entry["syncbridge"]["median"]
        entry["ratio"] = sb / lr if lr and not math.isnan(lr) and not math.isnan(sb) else None
        out[key] = entry
    return out


def render(summary: dict[str, dict], title: str) -> str:
    lines = [title, f"  {'figure':<26} {'logical':>14} {'syncbridge':>14} {'ratio':>8}"]
    for key, e in summary.items():
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.2f}x"
        lines.append(f"  {key:<26} {e['logical']['median']:>14,.2f} "
                     f"{e['syncbridge']['median']:>14,.2f} {ratio:>8}")
    return "\n".join(lines)


def _servers(args: argparse.Namespace, workdir: Path, stack: list) -> dict[str, Server]:
    if args.dsn_a and args.dsn_b:
        servers = {"a": Server(args.dsn_a, None), "b": Server(args.dsn_b, None)}
        for side, s in servers.items():
            if s.admin("show wal_level")[0][0] != "logical":
                raise SystemExit(f"syncbridge bench: --dsn-{side} needs wal_level = logical")
        print("note: with --dsn-a/--dsn-b the server logs and processes are not read; "
              "idle_statements_s and the servers' catchup_*_cpu_us_row are nan", flush=True)
        return servers
    from syncbridge.engine.embedded import EmbeddedPostgres

    servers = {}
    for side in ("a", "b"):
        pg = EmbeddedPostgres(workdir / f"pg_{side}", durable=args.durable).start()
        stack.append(pg)
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("alter system set wal_level = 'logical'")
        pg.restart()
        servers[side] = Server(pg.dsn(), pg.data / "server.log", pg.postmaster_pid())
    return servers


def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="syncbridge-bench-logical-"))
    stack: list = []
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in ENGINES}
    try:
        servers = _servers(args, workdir, stack)
        for i in range(args.runs):
            # alternate which engine goes first, so drift on a shared machine hits both
            for engine in ENGINES if i % 2 == 0 else ENGINES[::-1]:
                started = time.monotonic()
                run = RUNS[engine](args, servers, i + 1, workdir)
                try:
                    runs[engine].append(run.measure())
                finally:
                    run.close()
                print(f"run {i + 1} of {args.runs}: {engine} done in "
                      f"{time.monotonic() - started:.0f} s", flush=True)
            print(render(summarise({e: runs[e][-1:] for e in ENGINES}), f"run {i + 1}"),
                  flush=True)
        summary = summarise(runs)
        print(render(summary, f"median of {args.runs} run(s), "
                              f"{'durable' if args.durable else 'fsync off'}"), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        for pg in stack:
            pg.destroy()
    return 0
