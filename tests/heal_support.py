"""Helpers of the status and healing tests: two clusters, a fault proxy, timers.

The source (and hub) and the sink live in separate PostgreSQL clusters so a
sink restart leaves the hub up: restarting the hub forces a full re-lead,
which would hide a sink-side bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from rigs import Rig, link, make_template
from syncbridge.engine.embedded import EmbeddedPostgres

SCHEMA = "create table items (id int primary key, v text not null);"
# On the sink: one row per key per committed apply (a BEFORE INSERT row trigger fires for
# every row an upsert proposes, and commits or rolls back with the batch), so a batch
# applied twice after a fault leaves two rows for its keys (tests/test_crash.py's log)
APPLY_LOG = """
create table public.applies (id int not null);
create function public.log_apply() returns trigger language plpgsql as $$
begin
    insert into public.applies values (new.id);
    return new;
end $$;
create trigger log_apply before insert on public.items
    for each row execute function public.log_apply();
"""
# issue 13: a gone bridge shown gone within 2 heartbeats (2 s each), judged by the hub's
# clock (state_after), so a slow poll from a loaded machine cannot fail it
GONE_WITHIN = 5.0
FAST = {"fallback_poll": 1.0}  # every test may set more


class Clusters:
    """Two embedded clusters: `hub` (source side a) and `sink` (side b)."""

    def __init__(self) -> None:
        # own temp dirs, not pytest's: its 0700 root is reset by concurrent pytest runs.
        # durable: with synchronous_commit off, `pg_ctl -m immediate` loses commits the
        # bridge was told had happened, a loss no sync engine can see or repair
        self.hub = EmbeddedPostgres(durable=True).start()
        self.sink = EmbeddedPostgres(durable=True).start()
        self.n = 0
        self.migrated = False

    def databases(self) -> tuple[str, str]:
        """A fresh database in each cluster, migrated (a clone of the cluster's template):
        every caller runs `Rig.setup()` next, whose migrate then has nothing to do."""
        if not self.migrated:
            for pg in (self.hub, self.sink):
                make_template(pg.dsn(), pg.dsn, "migrated")
            self.migrated = True
        self.n += 1
        name = f"h{self.n}"
        for pg in (self.hub, self.sink):
            with psycopg.connect(pg.dsn(), autocommit=True) as c:
                c.execute(f"create database {name} template migrated")
        return self.hub.dsn(name), self.sink.dsn(name)

    def destroy(self) -> None:
        self.hub.destroy()
        self.sink.destroy()


def crash_restart(pg: EmbeddedPostgres, down: float = 0.0) -> float:
    """pg_ctl -m immediate, stay down `down` seconds, start; returns when it is back."""
    pg.stop("immediate")
    if down:
        time.sleep(down)  # the outage itself, not synchronisation
    pg.start()
    return time.monotonic()


def make(clusters: Clusters, tmp_path: Path, settings: dict[str, Any] | None = None,
         direction: str = "a_to_b") -> Rig:
    dsn_a, dsn_b = clusters.databases()
    rig = Rig(tmp_path, dsn_a, dsn_b, [link("items", "items", ["id"], direction)],
              {**FAST, **(settings or {})})
    rig.execute("a", SCHEMA)
    rig.execute("b", SCHEMA)
    rig.execute("b", APPLY_LOG)
    rig.setup()
    return rig


def status(rig: Rig, direction: str = "a_to_b") -> dict[str, Any]:
    with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
        cur = c.execute("select * from sync.status where link = 'items' and direction = %s",
                        (direction,))
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row, strict=True)) if row else {}


def state(rig: Rig) -> str | None:
    return status(rig).get("state")


def hub_now(rig: Rig) -> datetime:
    """The hub's clock: the clock sync.status judges heartbeats and stalls by."""
    return rig.query("a", "select clock_timestamp()")[0][0]


def state_after(rig: Rig, since: datetime, seconds: float, want: str) -> tuple[str, float | None]:
    """The state sync.status shows once the hub's clock is `seconds` past `since`, and
    how far past `since` (hub clock) it was first read as `want` (None: never).

    A bound that is the feature ("shown gone within two heartbeats") is judged here by
    the hub's own clock, not by how fast this process gets to poll on a loaded machine:
    the view is read at or after the bound, so a slow poll cannot fail it."""
    first = None
    while True:
        with contextlib.suppress(psycopg.OperationalError):
            with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
                past, got = c.execute(
                    "select extract(epoch from clock_timestamp() - %s)::float8, "
                    "(select state from sync.status where link = 'items' "
                    "and direction = 'a_to_b')", (since,)).fetchone()
            if got == want and first is None:
                first = past
            if past >= seconds:
                return got, first
        time.sleep(0.05)


def until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    """Poll pred() until true; returns the seconds it took (TimeoutError past timeout)."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(psycopg.OperationalError):  # a database that is restarting
            if pred():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def arrives(rig: Rig, key: int, timeout: float = 30) -> float:
    """Write row `key` on a; seconds until b has it."""
    rig.execute("a", "insert into items values (%s, 'probe') on conflict (id) do update "
                     "set v = items.v || '+'", (key,))
    return until(lambda: rig.query("b", "select count(*) from items where id = %s",
                                   (key,))[0][0] == 1, timeout, f"row {key} on b")


def flowing(rig: Rig, timeout: float = 30) -> float:
    """Seconds until the sink records a batch applied after now (it flows again),
    polled from now: call it as soon as the database is reachable again."""
    start = time.monotonic()
    now = rig.query("b", "select clock_timestamp()")[0][0]
    until(lambda: rig.query("b", "select count(*) from sync.applied_batches "
                                 "where applied_at > %s", (now,))[0][0] > 0,
          timeout, "a batch applied after the fault")
    return time.monotonic() - start


def report(fault: str, times: list[float]) -> float:
    med = statistics.median(times)
    print(f"heal fault={fault!r} times_s={[round(t, 2) for t in times]} median_s={med:.2f}")
    return med


class Writer:
    """A thread inserting rows on side a until stopped; reconnects through restarts."""

    def __init__(self, dsn: str, start: int = 1_000_000) -> None:
        self.dsn, self.next = dsn, start
        self.committed = 0  # inserts that returned: a round waits for some before its fault
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                conn = conn or psycopg.connect(self.dsn, autocommit=True)
                lo, self.next = self.next, self.next + 10  # a commit whose ack was lost
                conn.execute("insert into items select g, 'w' from generate_series(%s, %s) g",
                             (lo, lo + 9))            # must not be retried as a duplicate
                self.committed += 1
            except psycopg.Error:  # the server restarts under us: reconnect
                conn = None
                self.stop.wait(0.05)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def wrote(self, commits: int = 3) -> None:
        """Until `commits` more inserts have committed: the fault lands among writes."""
        target = self.committed + commits
        until(lambda: self.committed >= target, 60, f"{commits} more writer commits")

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


class Proxy:
    """A TCP proxy in its own thread and event loop: `drop()` closes every proxied
    connection (the bridge sees a reset), `stall()` stops forwarding (connections
    stay open, bytes wait), `resume()` forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.loop = asyncio.new_event_loop()
        self.flowing = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def dsn(self, dsn: str) -> str:
        return dsn.replace(f":{self.target}/", f":{self.port}/")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.flowing.set()
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_w}
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer),
                             return_exceptions=True)
        for w in (writer, up_w):
            self.writers.discard(w)
            w.close()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            data = await r.read(65536)
            if not data:
                break
            await self.flowing.wait()
            w.write(data)
            await w.drain()
        w.close()

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)

    def drop(self) -> None:
        def kill() -> None:
            for w in list(self.writers):
                w.transport.abort()  # RST, as a crashed router or a killed peer
            self.writers.clear()

        self._call(kill)

    def stall(self) -> None:
        self._call(self.flowing.clear)

    def resume(self) -> None:
        self._call(self.flowing.set)

    def close(self) -> None:
        self.drop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
