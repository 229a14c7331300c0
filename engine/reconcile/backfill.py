"""`syncbridge backfill`: signal every existing key of a link's source side.

Capture only sees changes, so rows that were there before `install` are sent
by signalling their keys: the normal pipeline then reads and applies the
current rows, exactly like live changes (DESIGN: backfill is "signal these
keys"). How it stays safe and gentle:

- keyset pagination in key order (`where key > last order by key limit n`,
  one primary-key index range per chunk, never OFFSET);
- each chunk's signals and the run's position (`sync.backfill_runs` in the
  source database) commit in one transaction, so a killed backfill resumes
  after the last committed chunk and signals no key twice;
- throttle: the next chunk waits while more than `max_pending` backfill
  signals of the link side are still queued or claimed. Live signals queue
  behind at most that many, so their extra lag is bounded by
  max_pending / bridge throughput (3,000 rows at ~24k rows/s = ~0.13 s).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncbridge.engine import faults, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError
from syncbridge.engine.postgres import sql as pg_sql

CHUNK = 1_000  # keys signalled per transaction
MAX_PENDING = 3_000  # backfill signals of a link side in the queue at once: ~3 bridge batches
THROTTLE_POLL = 0.01  # seconds between queue-depth checks while throttled (one cheap count)


SQL = sqlfiles.Queries("queries/reconcile.sql")


@dataclass
class Run:
    id: str
    link: str
    side: str
    filter: str
    last_key: list[str] | None = None  # key column values as text (keyset position)
    signalled: int = 0
    total: int | None = None
    status: str = "running"
    resumed: bool = False

    def params(self) -> dict[str, Any]:
        return {"id": self.id, "link": self.link, "side": self.side, "filter": self.filter,
                "last_key": Jsonb(self.last_key) if self.last_key is not None else None,
                "signalled": self.signalled, "total": self.total, "status": self.status}


def source_side(config: Config, link: str, side: str | None) -> str:
    """The side to signal: the link's source (a for two-way links unless told)."""
    lk = config.links[link]
    sources = [s for s, _ in lk.directions()]
    if side is None:
        return sources[0]
    if side not in sources:
        raise ConfigError(f"link {link!r} is {lk.direction}: side {side} is not a source, "
                          f"backfill signals side {sources[0]}")
    return side


class _Pager:
    """The keyset page statement of one link side, with an optional operator filter."""

    def __init__(self, shape: LinkShape, side: str, where: str | None) -> None:
        t = shape.table(side)
        self.keys = shape.key_cols(side)
        self.types = [t.columns[k].type for k in self.keys]
        # the link's own filter and transforms (docs/filters.md), '%' escaped: these
        # statements run with psycopg parameters
        self.table = sql.SQL(pg_sql.source_rows(shape, side).as_string(None).replace("%", "%%"))
        self.cols = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k))
                                       for k in self.keys)
        # the operator's condition is SQL by design (like psql); only '%' needs escaping
        self.user = sql.SQL("(" + where.replace("%", "%%") + ")") if where else None

    def where(self, after: bool) -> sql.Composable:
        parts: list[sql.Composable] = []
        if after:
            vals = sql.SQL(", ").join(
                sql.SQL("{}::text::{}").format(sql.Placeholder(f"k{i}"), sql.SQL(t))
                for i, t in enumerate(self.types))
            parts.append(sql.SQL("({}) > ({})").format(self.cols, vals))
        if self.user is not None:
            parts.append(self.user)
        return sql.SQL("where ") + sql.SQL(" and ").join(parts) if parts else sql.SQL("")

    def page(self, after: bool) -> sql.Composed:
        obj = sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
            sql.SQL("{}, t.{}").format(sql.Literal(k), sql.Identifier(k)) for k in self.keys))
        return SQL.compose(
            "backfill_page", key_cols=self.cols, table=self.table, where=self.where(after),
            key_obj=obj,
            key_text=sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(k))
                                        for k in self.keys),
            key_cols_desc=sql.SQL(", ").join(sql.SQL("t.{} desc").format(sql.Identifier(k))
                                             for k in self.keys))

    def count(self) -> sql.Composed:
        return SQL.compose("count_rows", table=self.table, where=self.where(False))


class Progress:
    """The backfill's progress bar (rich: bar, rows, rate, ETA) on a terminal; silent when
    the stream is not one (the command prints its one-line result either way)."""

    def __init__(self, label: str, total: int | None, done: int = 0,
                 stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        stream = stream or sys.stderr
        self.tty = stream.isatty()
        console = Console(file=stream, force_terminal=self.tty or None)
        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                       TimeRemainingColumn(),
                       console=console, disable=not self.tty, transient=False)
        self.task = self.bar.add_task(label, total=total or None, completed=done, rate="")
        if self.tty:
            self.bar.start()

    def update(self, done: int, final: bool = False) -> None:
        if not self.tty:
            return
        self.bar.update(self.task, completed=done)
        speed = self.bar.tasks[0].speed
        self.bar.update(self.task, rate=f"{speed:,.0f} rows/s" if speed else "", refresh=final)
        if final:
            self.bar.stop()


def _wait_for_room(conn: psycopg.Connection, run: Run, max_pending: int, chunk: int,
                   stop: threading.Event | None) -> bool:
    """Block while too many backfill signals are still queued; False when stopped."""
    while True:
        pending = conn.execute(SQL["backfill_pending"], {"link": run.link, "side": run.side}
                               ).fetchone()[0]
        if pending + chunk <= max_pending:
            return True
        if stop is not None and stop.is_set():
            return False
        time.sleep(THROTTLE_POLL)


def _open_run(conn: psycopg.Connection, link: str, side: str, filt: str, restart: bool,
              request_id: str | None) -> Run:
    args = {"link": link, "side": side, "filter": filt}
    if restart:
        conn.execute(SQL["backfill_abandon"], args)
    row = None if request_id else conn.execute(SQL["backfill_open"], args).fetchone()
    if row is None:
        run = Run(request_id or str(uuid.uuid4()), link, side, filt)
        conn.execute(SQL["backfill_upsert"], run.params())
        return run
    return Run(str(row[0]), link, side, filt, row[1], row[2], row[3], resumed=True)


def _read_keys(path: Path, keys: list[str]) -> list[dict[str, Any]]:
    """One key per line: a JSON object in source column names, or a bare value (one-column key)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = line
        if not isinstance(value, dict):
            if len(keys) != 1:
                raise ConfigError(f"{path}: line {line!r} is not a JSON object of {keys}")
            value = {keys[0]: value}
        out.append(value)
    return out


def backfill(config: Config, shape: LinkShape, side: str | None = None, where: str | None = None,
             keys_file: str | None = None, restart: bool = False, chunk: int = CHUNK,
             max_pending: int = MAX_PENDING, progress: bool = True,
             stop: threading.Event | None = None, request_id: str | None = None,
             on_chunk: Callable[[Run], None] | None = None) -> Run:
    """Signal the keys of a link's source side, resuming an unfinished run of the same filter."""
    link = shape.link.name
    side = source_side(config, link, side)
    peer = config.peers[shape.link.side(side).peer]
    if peer.dialect != "postgres":
        raise ConfigError(f"link {link!r}: backfill of a {peer.dialect} side is not supported; "
                          "its change tracking is resynced by the bridge")
    filt = f"keys:{Path(keys_file).resolve()}" if keys_file else (where or "")
    hub = config.hub_peer.dsn
    with psycopg.connect(peer.dsn, autocommit=True) as conn, \
            _HubMirror(hub if hub != peer.dsn else None) as mirror:
        with conn.transaction():
            run = _open_run(conn, link, side, filt, restart, request_id)
        pager = _Pager(shape, side, None if keys_file else where)
        listed = _read_keys(Path(keys_file), shape.key_cols(side)) if keys_file else None
        if run.total is None:
            run.total = len(listed) if listed is not None else conn.execute(
                pager.count(), {}).fetchone()[0]  # params given: '%%' unescaped
        mirror.write(run)
        bar = Progress(f"backfill {link} side {side}", run.total, run.signalled,
                       sys.stderr if progress else _Null())
        while run.status == "running":
            if not _wait_for_room(conn, run, max_pending, chunk, stop):
                break
            with conn.transaction():
                n = (_keys_chunk(conn, run, listed, chunk) if listed is not None
                     else _page_chunk(conn, run, pager, chunk))
                run.signalled += n
                if n < chunk:
                    run.status = "finished"
                conn.execute(SQL["backfill_upsert"], run.params())
                conn.execute(sqlfiles.for_psycopg(SQL["notify"]), (f"{link}:{side}",))
            faults.hit("backfill_chunk")
            mirror.write(run)
            bar.update(run.signalled, final=run.status == "finished")
            if on_chunk is not None:
                on_chunk(run)
        return run


def _page_chunk(conn: psycopg.Connection, run: Run, pager: _Pager, chunk: int) -> int:
    after = run.last_key is not None
    params: dict[str, Any] = {"limit": chunk, "link": run.link, "side": run.side}
    if after:
        params.update({f"k{i}": v for i, v in enumerate(run.last_key or [])})
    n, last = conn.execute(pager.page(after), params).fetchone()
    if n:
        run.last_key = last
    return n


def _keys_chunk(conn: psycopg.Connection, run: Run, listed: list[dict[str, Any]],
                chunk: int) -> int:
    start = int((run.last_key or ["0"])[0])
    part = listed[start: start + chunk]
    if part:
        conn.execute(SQL["backfill_keys"], {"link": run.link, "side": run.side,
                                          "keys": json.dumps(part)})
    run.last_key = [str(start + len(part))]
    return len(part)


class _HubMirror:
    """Copies the run's progress row to the hub when the hub is another database."""

    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn
        self.conn: psycopg.Connection | None = None

    def __enter__(self) -> _HubMirror:
        if self.dsn:
            self.conn = psycopg.connect(self.dsn, autocommit=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()

    def write(self, run: Run) -> None:
        if self.conn is not None:
            self.conn.execute(SQL["backfill_upsert"], run.params())


class _Null:
    def isatty(self) -> bool:
        return False

    def write(self, _s: str) -> None:
        pass

    def flush(self) -> None:
        pass
