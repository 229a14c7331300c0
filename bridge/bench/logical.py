"""`syncbridge bench --compare logical`: syncbridge beside native logical replication (issue #16).

Both engines run the same workloads, in one run, on the same two clusters
(source a, target b; `wal_level = logical`), each engine on fresh databases:

- catchup_rows_s: --rows rows written while the engine is stopped (bridge not
  running / subscription disabled), then rows/s from start (enable) until the
  target has them all;
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
- rss_mb: peak RSS during bulk. syncbridge: VmHWM of the bridge process;
  logical: VmRSS minus RssShmem (shared_buffers pages) of the walsender plus
  the apply worker, sampled every 50 ms.

ratio = syncbridge / logical, of medians.

Without --durable the embedded server runs synchronous_commit = off, and a
walsender only ships WAL that has been flushed, i.e. every wal_writer_delay
(200 ms): logical latency then reads ~200 ms. Compare latency with --durable.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from syncbridge.bridge.bench.core import PAYLOAD, SCHEMA, Bench
from syncbridge.bridge.bench.rig import wait_until

KEYS = ("catchup_rows_s", "bulk_rows_s", "latency_p50_ms", "latency_p99_ms",
        "overhead_insert_c1", "overhead_update_c1", "overhead_insert_c4", "overhead_update_c4",
        "idle_statements_s", "rss_mb")
ENGINES = ("logical", "syncbridge")
IDLE_SETTLE_S = 2  # after the reload: every idle session runs one command with the old setting
LOGICAL_ARRIVALS = """
create table bench_arrivals (id bigint, written_at timestamptz, arrived_at timestamptz);
create function bench_arrival_row() returns trigger language plpgsql as $$
begin
    insert into public.bench_arrivals values (new.id, new.updated_at, clock_timestamp());
    return null;
end $$;
create trigger bench_arrival_row after insert or update on bench_items
    for each row execute function bench_arrival_row();
alter table bench_items disable trigger bench_arrival_row;
"""
# log_line_prefix for the idle window: the database lets us count one engine's statements only
LOG_PREFIX = "%m [%p] db=%d "
STATEMENT_LINE = re.compile(r" db=(\S+) LOG:  (?:statement|execute [^:]*):")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compare", choices=("logical",),
                   help="run the workloads on syncbridge and on native logical replication "
                        "and print both with the ratio (ignores --only)")
    p.add_argument("--json", metavar="FILE", help="--compare: write the figures as JSON")
    p.add_argument("--idle-seconds", type=float, default=10,
                   help="--compare: idle window for counting statements in the server log")


class Server:
    """One cluster as the compare sees it: admin DSN, a DSN per database, its log."""

    def __init__(self, admin_dsn: str, log_path: Path | None) -> None:
        self.admin_dsn = admin_dsn
        self.log_path = log_path

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


def _status_kb(pid: int) -> dict[str, int]:
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
                    st = _status_kb(pid)
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
        out["catchup_rows_s"] = b.catchup()["rows_per_s"]
        out["bulk_rows_s"] = b.bulk()["rows_per_s"]
        out["rss_mb"] = _status_kb(b.rig.proc.pid)["VmHWM"] / 1024
        out["idle_statements_s"] = sum(count_idle_statements(
            self.servers, self.dbs, self.args.idle_seconds).values())
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


class LogicalBench(CompareBench):
    """Bench's writers and pgbench, with a publication/subscription in place of the bridge."""

    SUB = "bench_sub"

    def setup(self) -> None:
        for side in ("a", "b"):
            self.rig.execute(side, SCHEMA)
        self.rig.execute("b", LOGICAL_ARRIVALS)
        self.rig.execute("a", "create publication bench_pub for table bench_items "
                              "with (publish = 'insert, update, delete, truncate')")
        self.rig.execute("b", f"create subscription {self.SUB} connection "
                              f"'{self.rig.dsn['a']}' publication bench_pub "
                              "with (copy_data = false)")
        self._wait_worker(True)

    def teardown(self) -> None:
        self.rig.execute("b", f"drop subscription {self.SUB}")  # drops its slot on a too

    def _set_enabled(self, on: bool) -> None:
        self.rig.execute("b", f"alter subscription {self.SUB} {'enable' if on else 'disable'}")
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
        start = time.monotonic()
        self._set_enabled(True)
        wait_until(lambda: self._target_count() >= n, 600, "catch-up rows on the target", 0.02)
        return {"rows_per_s": n / (time.monotonic() - start)}

    def bulk(self) -> dict[str, float]:
        self.reset()
        n = self.args.rows
        pids = [self._apply_pid(), self._walsender_pid()]
        with RssSampler([p for p in pids if p]) as rss:
            first = self._write_rows(n)
            wait_until(lambda: self._target_count() >= n, 600, "bulk rows on the target", 0.02)
            done = time.monotonic()
        return {"rows_per_s": n / (done - first), "rss_mb": rss.peak_kb / 1024}

    def latency(self) -> dict[str, float]:
        self.reset()
        self.rig.execute("a", f"insert into bench_items (id, account_id, status, amount, payload)"
                              f" select g, 1, 'seed', 1, {PAYLOAD.format(g='g')} "
                              "from generate_series(1, 1000) g")
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
        self.rig.execute("a", f"insert into bench_items (id, account_id, status, amount, payload)"
                              f" select g, mod(g, 1000), 'seed', 1, {PAYLOAD.format(g='g')} "
                              "from generate_series(1, 100000) g")
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
        out["catchup_rows_s"] = b.catchup()["rows_per_s"]
        bulk = b.bulk()
        out["bulk_rows_s"], out["rss_mb"] = bulk["rows_per_s"], bulk["rss_mb"]
        out["idle_statements_s"] = sum(count_idle_statements(
            self.servers, self.dbs, self.args.idle_seconds).values())
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
    lines = [title, f"  {'figure':<22} {'logical':>14} {'syncbridge':>14} {'ratio':>8}"]
    for key, e in summary.items():
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.2f}x"
        lines.append(f"  {key:<22} {e['logical']['median']:>14,.2f} "
                     f"{e['syncbridge']['median']:>14,.2f} {ratio:>8}")
    return "\n".join(lines)


def _servers(args: argparse.Namespace, workdir: Path, stack: list) -> dict[str, Server]:
    if args.dsn_a and args.dsn_b:
        servers = {"a": Server(args.dsn_a, None), "b": Server(args.dsn_b, None)}
        for side, s in servers.items():
            if s.admin("show wal_level")[0][0] != "logical":
                raise SystemExit(f"syncbridge bench: --dsn-{side} needs wal_level = logical")
        print("note: with --dsn-a/--dsn-b the server logs are not read; "
              "idle_statements_s is nan", flush=True)
        return servers
    from syncbridge.engine.embedded import EmbeddedPostgres

    servers = {}
    for side in ("a", "b"):
        pg = EmbeddedPostgres(workdir / f"pg_{side}", durable=args.durable).start()
        stack.append(pg)
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("alter system set wal_level = 'logical'")
        pg.restart()
        servers[side] = Server(pg.dsn(), pg.data / "server.log")
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
