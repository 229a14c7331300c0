"""`syncbridge seed LINK`: the first copy of a link's source table into an empty sink.

`backfill` sends every row through the pipeline (a signal, a read, an upsert
per key): right for repairs, slow for a first copy. Seed copies the table with
COPY instead, in key-range chunks over N connections that share one exported
snapshot, while capture keeps queueing changes. The handover rule:

1. the link is paused on the hub (`sync.pause(link, 'seeding')`): the bridge
   claims nothing for it, and the seed waits until every live bridge has
   beaten since the pause and no batch of the link is still in flight;
2. on the source, one REPEATABLE READ transaction exports its snapshot S and,
   in S, records the ids of this link side's queued signals (`sync.seed_runs`
   on the sink): the copy already reflects them (a signal stands for "send
   this key's current row", and the copy holds every row as it is in S);
3. workers `SET TRANSACTION SNAPSHOT` S and COPY key ranges (source columns
   in pair order -> the sink's linked columns; text format under the pinned
   session settings on both ends, so each value reads back exactly as the
   bridge would write it). Each chunk's rows and its row in `sync.seed_chunks`
   commit in one sink transaction: a killed seed resumes after the chunks
   that are in (its remaining chunks then read a later snapshot, whose extra
   changes are queued too and applied afterwards);
4. when every chunk is in: exactly the recorded signals are deleted at the
   source (and, on a two-way link, the sink side's signals from before the
   copy, whose rows the copy replaced), two-way base images are recorded, and
   the link resumes. Every signal queued after S is applied by the bridge;
   none from before S is applied at all.

The sink writes carry the bridge's origin tag, so a two-way sink's capture does
not send the copy back. A batch the bridge applied to the sink after the seed
began (a bridge that did not honour the pause) fails the seed instead of
handing over a copy nobody can vouch for.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from syncbridge.engine import faults, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError, Link
from syncbridge.engine.hub.report import SQL as STATUS
from syncbridge.engine.postgres import base, capture
from syncbridge.engine.postgres import session as pg_session
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.postgres.drain import SQL as QUEUE
from syncbridge.engine.reconcile import backfill

SQL = sqlfiles.Queries("reconcile/seed.sql")
WORKERS = 4  # COPY connections per side
CHUNK_ROWS = 100_000  # rows per chunk: what a killed seed copies again at most, per worker
QUIESCE_TIMEOUT = 60.0  # seconds to wait for the bridge to let go of the link
POLL = 0.05  # seconds between looks while waiting for the bridge
REASON = "seeding"  # the pause reason sync.status shows
PROGRESS_FILTER = "seed"  # sync.backfill_runs.filter of a seed's progress row (sync.status)
APP_NAME = "syncbridge-seed"


class Refused(ConfigError):
    """The seed cannot start (nothing was copied); the message says why."""


class Unvouched(RuntimeError):
    """Something else wrote the sink during the copy: the seed does not hand over."""


@dataclass
class SeedRun:
    id: str
    link: str
    src: str
    dst: str
    bounds: list[list[str]]  # chunk upper bounds, key texts in source column names
    signals: list[int]  # source signals the copy reflects (recorded in the first snapshot)
    sink_signals: list[int]  # two-way: the sink side's signals from before the copy
    total: int
    started_at: datetime
    done: dict[int, int] = field(default_factory=dict)  # chunk -> rows copied
    resumed: bool = False
    seconds: float = 0.0

    @property
    def chunks(self) -> int:
        return len(self.bounds) + 1

    @property
    def copied(self) -> int:
        return sum(self.done.values())

    def progress(self, finished: bool = False) -> backfill.Run:
        """The run as a sync.backfill_runs row, which sync.status.backfill shows."""
        return backfill.Run(self.id, self.link, self.src, PROGRESS_FILTER, None, self.copied,
                            self.total, "finished" if finished else "running")


class _Plan:
    """The copy statements of one link direction."""

    def __init__(self, shape: LinkShape, src: str, dst: str) -> None:
        self.src, self.dst = src, dst
        self.keys = shape.key_cols(src)
        types = shape.table(src).columns
        self.types = [types[k].type for k in self.keys]
        self.table = pg_sql.source_rows(shape, src)  # the link's filter and transforms
        self.key_cols = pg_sql.columns("t", self.keys)
        self.out_cols = pg_sql.columns("t", shape.cols(src))
        self.copy_in = SQL.compose("copy_in", table=pg_sql.table_name(shape, dst),
                                   cols=pg_sql.names(shape.cols(dst)))
        self.sink_table = pg_sql.table_name(shape, dst)

    def bounds(self, step: int) -> sql.Composed:
        """No parameters: a filter or transform may hold a `%` (it is spliced SQL)."""
        return SQL.compose("bounds", table=self.table, key_cols=self.key_cols,
                           step=sql.Literal(step),
                           key_text=sql.SQL(", ").join(sql.SQL("{}::text").format(
                               sql.Identifier("t", k)) for k in self.keys))

    def _key(self, texts: list[str]) -> sql.Composed:
        return sql.SQL(", ").join(sql.SQL("{}::text::{}").format(sql.Literal(v), sql.SQL(t))
                                  for v, t in zip(texts, self.types, strict=True))

    def copy_out(self, bounds: list[list[str]], chunk: int) -> sql.Composed:
        """Chunk i: keys above bound i-1 and up to bound i (the first and last are open)."""
        parts = []
        if chunk > 0:
            parts.append(sql.SQL("({}) > ({})").format(self.key_cols, self._key(bounds[chunk - 1])))
        if chunk < len(bounds):
            parts.append(sql.SQL("({}) <= ({})").format(self.key_cols, self._key(bounds[chunk])))
        where = sql.SQL("where ") + sql.SQL(" and ").join(parts) if parts else sql.SQL("")
        return SQL.compose("copy_out", cols=self.out_cols, table=self.table, where=where)


def _connect(dsn: str) -> psycopg.Connection:
    """A connection in the bridge's pinned settings, and in UTF8 like the bridge's (asyncpg
    always is): COPY text from one server is then the other's input byte for byte, whatever
    either database's encoding."""
    conn = pg_session.connect(dsn)
    conn.execute("select set_config('application_name', %s, false), "
                 "set_config('client_encoding', 'UTF8', false)", (APP_NAME,))
    return conn


def directions(config: Config, link: Link) -> tuple[str, str]:
    """(source side, sink side); only Postgres-to-Postgres links are seeded (a two-way
    link from side a)."""
    for s in ("a", "b"):
        dialect = config.peers[link.side(s).peer].dialect
        if dialect != "postgres":
            raise Refused(f"link {link.name!r}: side {s} is on a {dialect} peer; seed copies "
                          "between Postgres peers only (use `syncbridge backfill` instead)")
    src = link.directions()[0][0]
    return src, "b" if src == "a" else "a"


class _Hub:
    """The link's pause on the hub and the seed's progress row there."""

    def __init__(self, config: Config, link: str) -> None:
        self.conn = psycopg.connect(config.hub_peer.dsn, autocommit=True)
        self.link = link
        self.held = False  # paused for seeding before this seed began (by an operator or a
        # killed seed): a refused seed leaves it so

    def pause(self) -> datetime:
        """Pause the link for the seed; returns the hub's time just after the pause."""
        was = self.conn.execute(sqlfiles.for_psycopg(STATUS["link_paused"]),
                                (self.link,)).fetchone()
        reason = was[0] if was else None
        if reason is not None and reason != REASON:
            raise Refused(f"link {self.link!r} is paused ({reason}): settle that and resume it "
                          "before seeding")
        self.held = reason == REASON
        self.conn.execute(sqlfiles.for_psycopg(STATUS["pause_link"]), (self.link, REASON))
        return self.conn.execute("select clock_timestamp()").fetchone()[0]

    def resume(self, refused: bool = False) -> None:
        """Let the link flow again; after a refusal only if the seed paused it itself."""
        if not (refused and self.held):
            self.conn.execute(sqlfiles.for_psycopg(STATUS["resume_link"]), (self.link,))

    def report(self, run: SeedRun, finished: bool = False) -> None:
        self.conn.execute(backfill.SQL["backfill_upsert"], run.progress(finished).params())

    def quiesce(self, since: datetime, sources: list[tuple[psycopg.Connection, str]],
                timeout: float) -> None:
        """Wait until every live bridge has read the pause and no batch is in flight."""
        deadline = time.monotonic() + timeout
        while True:
            unaware, live = self.conn.execute(SQL["unaware_bridges"], {"since": since}).fetchone()
            claimed = sum(c.execute(SQL["claimed"], {"link": self.link, "side": s}).fetchone()[0]
                          for c, s in sources) if live else 0  # a dead bridge's claims wait
            if not unaware and not claimed:
                return
            if time.monotonic() > deadline:
                raise Refused(f"link {self.link!r}: after {timeout:.0f}s a bridge still has "
                              f"{'not read the pause' if unaware else 'a batch in flight'}; "
                              "see `syncbridge status`")
            time.sleep(POLL)

    def close(self) -> None:
        self.conn.close()


def _open_run(sink: psycopg.Connection, plan: _Plan, link: str) -> SeedRun | None:
    """The unfinished seed of the link, checked against the sink table; None: start one."""
    row = sink.execute(SQL["open_run"], {"link": link}).fetchone()
    have = sink.execute(backfill.SQL.compose("count_rows", table=plan.sink_table,
                                             where=sql.SQL("")), {}).fetchone()[0]
    if row is None:
        if have:
            raise Refused(f"link {link!r}: the sink table {plan.sink_table.as_string(sink)} "
                          f"holds {have} row(s); seed copies into an empty table only (empty "
                          "it first, or use `syncbridge backfill`)")
        return None
    run = SeedRun(str(row[0]), link, row[1], "b" if row[1] == "a" else "a", json.loads(row[2]),
                  list(row[3]), list(row[4]), row[5], row[6], resumed=True)
    run.done = dict(sink.execute(SQL["done_chunks"], {"id": run.id}).fetchall())
    if have != run.copied:
        raise Refused(f"link {link!r}: the sink table holds {have} row(s) but the unfinished "
                      f"seed {run.id} copied {run.copied}: something else wrote it; empty "
                      "the table and delete that run from sync.seed_runs to start over")
    return run


def _new_run(snap: psycopg.Connection, sink: psycopg.Connection, shape: LinkShape,
             plan: _Plan, chunk_rows: int, started: datetime) -> SeedRun:
    """Plan the chunks and record the reflected signals, in the snapshot itself."""
    link, src, dst = shape.link.name, plan.src, plan.dst
    total = snap.execute(backfill.SQL.compose("count_rows", table=plan.table,
                                              where=sql.SQL(""))).fetchone()[0]
    step = max(chunk_rows, 1)
    bounds = ([list(r[0]) for r in snap.execute(plan.bounds(step))]
              if total > step else [])
    if bounds and len(bounds) * step == total:
        bounds.pop()  # the last bound is the last key: no empty chunk after it
    signals = snap.execute(SQL["queued_signals"], {"link": link, "side": src}).fetchone()[0]
    sink_signals = []
    if shape.link.direction == "both":  # the copy replaces the sink's rows, and their signals
        sink_signals = sink.execute(SQL["queued_signals"],
                                    {"link": link, "side": dst}).fetchone()[0]
    run = SeedRun(str(uuid.uuid4()), link, src, dst, bounds, signals, sink_signals, total,
                  started)
    sink.execute(SQL["create_run"], {"id": run.id, "link": link, "side": src,
                                     "bounds": json.dumps(bounds), "signals": signals,
                                     "sink_signals": sink_signals, "total": total,
                                     "started": started})
    return run


def seed(config: Config, shape: LinkShape, workers: int = WORKERS, chunk_rows: int = CHUNK_ROWS,
         progress: bool = True, quiesce_timeout: float = QUIESCE_TIMEOUT,
         on_chunk: Callable[[SeedRun], None] | None = None) -> SeedRun:
    """Copy the link's source table into its empty sink table, then hand over (see above)."""
    link = shape.link
    src, dst = directions(config, link)
    plan = _Plan(shape, src, dst)
    dsn = {s: config.peers[link.side(s).peer].dsn for s in ("a", "b")}
    started = time.monotonic()
    hub = _Hub(config, link.name)
    try:
        with _connect(dsn[src]) as source, _connect(dsn[dst]) as sink:
            since = hub.pause()
            try:
                queues = [(source if s == src else sink, s) for s, _ in link.directions()]
                hub.quiesce(since, queues, quiesce_timeout)
                sink_since = sink.execute("select clock_timestamp()").fetchone()[0]
                run = _open_run(sink, plan, link.name)
            except Refused:
                hub.resume(refused=True)
                raise
            run = _copy(shape, plan, dsn, sink, run, workers, chunk_rows, sink_since, hub,
                        progress, on_chunk)
            _handover(config, shape, run, source, sink)
            hub.report(run, finished=True)
            hub.resume()
        run.seconds = time.monotonic() - started
        return run
    finally:
        hub.close()


def _copy(shape: LinkShape, plan: _Plan, dsn: dict[str, str], sink: psycopg.Connection,
          run: SeedRun | None, workers: int, chunk_rows: int, since: datetime, hub: _Hub,
          progress: bool, on_chunk: Callable[[SeedRun], None] | None) -> SeedRun:
    """Copy every chunk not yet in, from one exported snapshot of the source."""
    src, dst = plan.src, plan.dst
    with _connect(dsn[src]) as snap:
        snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with snap.transaction():
            snapshot = snap.execute("select pg_export_snapshot()").fetchone()[0]
            if run is None:
                run = _new_run(snap, sink, shape, plan, chunk_rows, since)
            todo = [i for i in range(run.chunks) if i not in run.done]
            hub.report(run)
            bar = backfill.Progress(f"seed {run.link} {run.src} -> {run.dst}", run.total,
                                    run.copied, None if progress else io.StringIO())
            for chunk, rows in _parallel(dsn[src], dsn[dst], snapshot, plan, run, todo,
                                         workers, shape):
                run.done[chunk] = rows
                hub.report(run)
                bar.update(run.copied)
                if on_chunk is not None:
                    on_chunk(run)
            bar.update(run.copied, final=True)
    return run


def _parallel(src_dsn: str, dst_dsn: str, snapshot: str, plan: _Plan, run: SeedRun,
              todo: list[int], workers: int, shape: LinkShape):
    """(chunk, rows) as the workers commit them; the first worker error is raised."""
    jobs: queue.Queue[int] = queue.Queue()
    for chunk in todo:
        jobs.put(chunk)
    results: queue.Queue[tuple[int, int] | BaseException | None] = queue.Queue()
    stop = threading.Event()
    origin = capture.origin_tag(shape.link, run.src)
    threads = [threading.Thread(target=_worker, daemon=True,
                                args=(src_dsn, dst_dsn, snapshot, plan, run, origin, jobs,
                                      results, stop))
               for _ in range(max(1, min(workers, len(todo))))]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            item = results.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for t in threads:
            t.join()


def _worker(src_dsn: str, dst_dsn: str, snapshot: str, plan: _Plan, run: SeedRun, origin: str,
            jobs: queue.Queue, results: queue.Queue, stop: threading.Event) -> None:
    """Take chunks until none is left: COPY each out of the snapshot into the sink."""
    try:
        with _connect(src_dsn) as source, _connect(dst_dsn) as sink:
            source.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with source.transaction():
                source.execute(sql.SQL("set transaction snapshot {}").format(
                    sql.Literal(snapshot)))
                while not stop.is_set():
                    try:
                        chunk = jobs.get_nowait()
                    except queue.Empty:
                        break
                    results.put((chunk, _copy_chunk(source, sink, plan, run, origin, chunk)))
    except BaseException as e:  # handed to the coordinating thread, which raises it
        results.put(e)
    finally:
        results.put(None)


def _copy_chunk(source: psycopg.Connection, sink: psycopg.Connection, plan: _Plan,
                run: SeedRun, origin: str, chunk: int) -> int:
    """One chunk and its record in one sink transaction."""
    with sink.transaction():
        sink.execute(sqlfiles.for_psycopg(QUEUE["set_origin"]), (origin,))
        cur = sink.cursor()
        with cur.copy(plan.copy_in) as into, \
                source.cursor().copy(plan.copy_out(run.bounds, chunk)) as out:
            for data in out:
                into.write(data)
        rows = cur.rowcount
        sink.execute(SQL["chunk_done"], {"id": run.id, "chunk": chunk, "rows": rows})
    faults.hit("seed_chunk")
    return rows


def _handover(config: Config, shape: LinkShape, run: SeedRun, source: psycopg.Connection,
              sink: psycopg.Connection) -> None:
    """Drop exactly the signals the copy reflects, record two-way bases, finish the run."""
    writes = sink.execute(SQL["bridge_writes"], {"link": run.link, "side": run.src,
                                                 "since": run.started_at}).fetchone()[0]
    if writes:
        raise Unvouched(f"link {run.link!r}: a bridge applied {writes} batch(es) to the sink "
                           "while it was being seeded (it did not honour the pause); the copy "
                           "cannot be vouched for: empty the sink table, delete the run from "
                           "sync.seed_runs there and seed again")
    source.execute(SQL["forget_signals"], {"link": run.link, "side": run.src,
                                           "ids": run.signals})
    if run.sink_signals:
        sink.execute(SQL["forget_signals"], {"link": run.link, "side": run.dst,
                                             "ids": run.sink_signals})
    if shape.link.direction == "both":
        base.seed(config, shape)
    sink.execute(SQL["finish_run"], {"id": run.id})

