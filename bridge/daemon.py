"""The bridge: one asyncio process that keeps every link drained.

Shape of a run (this module: the process, leadership and terms):
- take the locks of a fair share of the configuration's links on the hub, and
  the coordinator lock if it is free (bridge/sharing.py, engine/hub/lease.py);
  holding none, wait as a hot standby, heartbeating, until a bridge dies or
  a share is free;
- a term runs named tasks: LISTEN per source peer and one drain loop per held
  link (bridge/draining.py), the stats and control loops, the webhook loop and
  scheduled checks when coordinating (bridge/upkeep.py), and the leader guard
  here, whose heartbeat also takes or gives back links (a change of the set
  ends the term as a reload does; the next term runs the new set);
- a lost leadership cancels every loop of the term at once; the bridge then
  tries to lead again;
- SIGTERM/SIGINT: stop claiming, let the batch in flight finish, exit 0.
  A second signal exits at once (nothing is lost: claimed batches recover).
- SIGHUP: re-read and validate the config (bridge/reload.py) while draining;
  a valid one ends the term as a stop does (batches in flight finish) and the
  next term runs it, on the same hub session: the leadership lock is never let
  go. The lock's name follows the set of links (engine/hub/lease.py), so the
  bridge takes the new set's lock first (refused if another bridge holds it)
  and keeps every lock it took until it stops (docs/topologies.md).

Every task is named; a task that ends while the term runs ends the term with
a logged reason (`event=task_failed`), and the process exits unless the error
is one worth retrying (the hub went away: the bridge leads again). The bridge
holds no SQL: the hub's statements are engine/hub/'s, the drains' their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from syncbridge.bridge import metrics
from syncbridge.engine import errors, sdnotify
from syncbridge.engine.config import Config
from syncbridge.engine.contract import Drain
from syncbridge.engine.hub.lease import Lease, lock_key
from syncbridge.engine.validate import shapes

from .reload import Plan
from .sharing import Sharing
from .upkeep import Upkeep
from .waits import HUB_ERRORS, retryable, wait_any

FLUSH_TIMEOUT = 5.0  # seconds a term's end waits for status counts still being written
log = logging.getLogger("syncbridge.bridge")

RELEAD_PAUSE = 0.5  # seconds between attempts to reach the hub and lead again
CONNECT_TIMEOUT = 15.0  # seconds for a term's pools to open, then the term starts over


class LostLeadership(Exception):
    """The hub connection holding the advisory lock is gone: stop draining."""


class Bridge(Sharing, Upkeep):
    """The process: leadership, terms, signals, health (see the module docstring)."""

    def __init__(self, config: Config, hup: asyncio.Event | None = None) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.halt = asyncio.Event()  # this term ends: stop, or leadership lost
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.pools: dict[str, asyncpg.Pool] = {}
        self.mssql: dict[str, Any] = {}  # SQL Server peers (engine/sqlserver/peer.py)
        self.drains: list[Drain] = []
        self.events: dict[str, asyncio.Event] = {}
        self.control = asyncio.Event()  # sync.link_control changed
        self.paused: dict[str, str] = {}  # link -> reason (held: paused or outside active_hours)
        self.rates: dict[str, float] = {}  # link -> rows per second (sync.set_rate)
        self.upkeep = asyncio.Event()  # dead-letter retries / resolutions wait (heartbeat)
        self.resyncs = asyncio.Event()  # sync.resync() requests wait (heartbeat)
        self.quiet: set[tuple[str, str]] = set()  # directions idle since their last wake
        self.depths: dict[tuple[str, str], int] = {}  # queued at each direction's last sample
        self.armed: dict[tuple[str, str], str] = {}  # wake locks held (bridge/listening.py)
        self.listen_conns: dict[str, Any] = {}  # peer -> (LISTEN connection, its lock)
        self.let_go: set[tuple[str, str]] = set()  # wake locks let go while rows flow
        self.orphans: dict[str, int] = {}  # peer -> backend pid of the lost LISTEN session
        self.wakes: dict[tuple[str, str], tuple[float, int, int]] = {}  # NOTIFYs a window
        self.ticks: dict[str, float] = {}  # loop -> last tick (monotonic)
        self.tick_every: dict[str, float] = {}  # loop -> its longest planned wait
        self.role = "starting"
        self.failing: dict[str, float] = {}  # drain name -> monotonic time of first failure
        self.to_clear: set[str] = set()  # drain names whose hub error is still to clear
        self.lease: Lease | None = None  # the hub session holding the lock, while active
        self.leader_ok_at = 0.0
        self.hb = float(config.setting("heartbeat_interval"))
        self.metrics = metrics.Metrics(lambda: self.role)
        self.shapes = shapes(config)  # validate before anything starts
        self.hup = hup or asyncio.Event()  # SIGHUP: reload the config file
        self.pending: Plan | None = None  # a validated reload, applied between terms
        self.lock_keys = [lock_key(list(config.links))]  # every link set run, in order
        self.held: set[str] = set()  # the lock_keys this hub session holds
        self.links: set[str] = set()  # the links whose lock it holds (bridge/sharing.py)
        self.give_back: set[str] = set()  # links released once this term's drains stop
        self.regroup = False  # the term ends: the set of held links or locks changed

    # -- lifecycle --------------------------------------------------------
    async def run(self) -> None:
        with _signals(self._on_signal, self.hup.set):
            sdnotify.notify("STATUS=connecting")
            side = [asyncio.create_task(self._watchdog(), name="watchdog"),
                    asyncio.create_task(self._reload_loop(), name="reload")]
            address = self.config.setting("metrics")
            if address:
                side.append(asyncio.create_task(
                    metrics.serve(address, self.metrics, self.health), name="metrics"))
            try:
                while not self.stop.is_set():
                    for t in side:
                        if t.done():  # a side task may not end while the bridge runs
                            log.error("event=task_failed task=%s error=%r", t.get_name(),
                                      t.exception())
                            raise t.exception() or RuntimeError(f"{t.get_name()} ended")
                    try:
                        await self._lead_once()
                    except LostLeadership as e:
                        log.warning("event=leadership_lost reason=%s", e)
                    except Exception as e:
                        if not retryable(e):
                            raise
                        log.warning("event=hub_unavailable error=%s", errors.describe(e))
                        await self._sleep(RELEAD_PAUSE)
            finally:
                for t in side:
                    t.cancel()
                await asyncio.gather(*side, return_exceptions=True)
                await self._close_pools()
        log.info("event=stopped instance=%s", self.instance)

    def _on_signal(self, signum: int) -> None:
        if self.stop.is_set():
            log.warning("event=forced_exit signal=%s", signal.Signals(signum).name)
            os._exit(1)
        log.info("event=stopping signal=%s", signal.Signals(signum).name)
        sdnotify.notify("STOPPING=1")
        self.stop.set()
        self.halt.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep that a stop request cuts short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _close_pools(self) -> None:
        for pool in self.pools.values():
            pool.terminate()
        self.pools.clear()
        for peer in self.mssql.values():
            with contextlib.suppress(Exception):
                await peer.close()
        self.mssql.clear()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """/healthz: active or standby, and every loop ticked within loop_stuck_after."""
        now = time.monotonic()
        limit = self.config.setting("loop_stuck_after")
        ages = {name: round(now - t, 1) for name, t in self.ticks.items()}
        stuck = sorted(n for n, age in ages.items() if age > limit + self.tick_every.get(n, 0))
        ok = self.role in ("active", "standby") and bool(ages) and not stuck
        return ok, {"role": self.role, "stuck": stuck, "loops": ages}

    # -- leadership ----------------------------------------------------------

    async def _lead_once(self) -> None:
        """One hub session: wait for the locks, then terms until a stop (or a raise);
        a reload ends a term and the next one runs the new config."""
        while self.pending is not None:
            await self._apply_pending(None)
        conn = await asyncpg.connect(self.config.hub_peer.dsn, timeout=10,
                                     server_settings={"application_name": "syncbridge-leader"})
        lease = Lease(conn, self.instance, self.lock_keys[0], self.hb)
        try:
            while not self.stop.is_set():
                await self._wait_for_work(lease)
                while self.pending is not None:
                    await self._apply_pending(lease)
                    await self._give_back(lease)
                self.halt = asyncio.Event()
                self.regroup = False
                if self.stop.is_set():
                    break
                await self._active(lease)
                await self._give_back(lease)  # the term's drains stopped
        finally:
            self.role = "starting"
            if not conn.is_closed():  # a clean stop: gone from sync.bridges at once
                with contextlib.suppress(*HUB_ERRORS):
                    await lease.forget()
            conn.terminate()
            self.held, self.links, self.give_back = set(), set(), set()  # gone with the session

    async def _wait_for_work(self, lease: Lease) -> None:
        """Beat until this bridge holds links or coordinates (a hot standby meanwhile)."""
        announced = False
        while not self.stop.is_set():
            while self.pending is not None:  # a standby reloads too: it waits for the new locks
                await self._apply_pending(lease)
                await self._give_back(lease)
            await self._share(lease, await self._beat(lease))
            await self._give_back(lease)  # between terms: no drain runs
            if self.links or self.coordinating:
                return
            if not announced:
                log.info("event=standby instance=%s", self.instance)
                self.role = "standby"
                sdnotify.notify("READY=1\nSTATUS=standby")
                announced = True
            self.ticks = {"standby": time.monotonic()}
            await self._sleep(self.hb)

    async def _active(self, lease: Lease) -> None:
        self.role = "active"
        self.lease = lease
        self.lost: str | None = None  # why the leadership was lost, once it is
        await self._beat(lease)  # before connecting: a standby sees us alive
        self.leader_ok_at = time.monotonic()
        log.info("event=active instance=%s links=%d of=%d coordinator=%s", self.instance,
                 len(self.links), len(self.shapes), "yes" if self.coordinating else "no")
        self.ticks = {}
        self.paused, self.rates, self.quiet, self.depths = {}, {}, set(), {}
        self.armed, self.let_go, self.wakes = {}, set(), {}
        self.upkeep.set()  # look for retries and resolutions once at the start of a term
        try:  # a pool's first connection to a server still recovering was seen to hang
            await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT)
            await self._read_control()  # before any drain starts: a paused link claims nothing
        except BaseException:
            await self._close_pools()
            raise
        tasks = self._term_tasks(lease)
        sdnotify.notify("READY=1\nSTATUS=active")
        stopper = asyncio.create_task(self._term_ends(), name="halt")
        graceful = True
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is stopper or t.exception() is None and self.halt.is_set():
                    continue  # the term ends (stop or lost leadership): loops return
                graceful = False
                exc = t.exception() or RuntimeError(f"task {t.get_name()} ended")
                if not isinstance(exc, LostLeadership):
                    log.error("event=task_failed task=%s error=%r", t.get_name(), exc)
                raise exc
            if self.lost is not None:
                graceful = False
                raise LostLeadership(self.lost)
        finally:
            self.halt.set()
            await self._shutdown(tasks, stopper, graceful and (
                self.stop.is_set() or self.pending is not None or self.regroup))
            self.lease = None
            await self._close_pools()
            self.drains.clear()

    def _term_tasks(self, lease: Lease) -> list[asyncio.Task]:
        """Every loop of a term, each a named task."""
        loops = [("leader", self._guard_leadership(lease))]
        loops += [(f"listen:{p}", self._listen(p)) for p in self._source_peers()]
        loops += [(f"drain:{link}", self._drain_loop(ds)) for link, ds in self._by_link().items()]
        loops += [("stats", self._stats_loop()), ("control", self._control_loop())]
        if self.coordinating:  # the hub-wide jobs: one bridge runs them
            loops.append(("extra", self._extra_loops()))
        return [asyncio.create_task(coro, name=name) for name, coro in loops]

    async def _term_ends(self) -> None:
        """Until the term ends: halted, or stopped (a signal, or `stop` set by a caller)."""
        await wait_any([self.halt], self.stop, None)
        self.halt.set()

    async def _shutdown(self, tasks: list[asyncio.Task], stopper: asyncio.Task,
                        graceful: bool) -> None:
        """A stop lets drain loops finish their batch (up to 20 s); a lost leadership
        or a failed task cancels them at once (a cancelled batch stays claimed and is
        resumed by whoever leads next)."""
        stopper.cancel()
        drains = [t for t in tasks if t.get_name().startswith("drain:")]
        others = [t for t in tasks if t not in drains]
        for t in others:
            t.cancel()
        if drains and graceful:
            _, pending = await asyncio.wait(drains, timeout=20)
            for t in pending:
                t.cancel()
        for t in drains:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for d in self.drains:  # batch counts still being written go in before the pools close
            with contextlib.suppress(TimeoutError):  # (not for longer than a stop may take)
                await asyncio.wait_for(d.flush(), FLUSH_TIMEOUT)

    async def _guard_leadership(self, lease: Lease) -> None:
        """One heartbeat per interval: the term's only statement while idle."""
        while not self.halt.is_set():
            await self._check_leader(lease)
            await self._nap(self.hb)

    async def _check_leader(self, lease: Lease) -> None:
        try:
            beat = await self._beat(lease, self._quiet_directions())
            self.leader_ok_at = time.monotonic()
            if await self._share(lease, beat):  # links taken or given back: the next term
                self.regroup = True
                self.halt.set()
        except Exception as e:
            if not retryable(e):
                raise
            self.lost = errors.describe(e)
            self.halt.set()
            raise LostLeadership(self.lost) from e
        self._set_controls(beat.controls)
        if beat.upkeep:
            self.upkeep.set()
            self.resyncs.set()

    async def _fence(self) -> None:
        """Before a batch: if the leadership was last confirmed two heartbeats ago (the
        process was stopped or starved), confirm it now instead of racing a new leader."""
        if time.monotonic() - self.leader_ok_at > 2 * self.hb and self.lease is not None:
            await self._check_leader(self.lease)

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:  # not under systemd's watchdog: idle until the bridge stops
            await self.stop.wait()
            return
        while True:
            await asyncio.sleep(interval)
            if self.health()[0]:
                sdnotify.notify("WATCHDOG=1")


class _signals:
    """Install SIGTERM/SIGINT/SIGHUP handlers on the loop and restore the old ones on exit."""

    def __init__(self, handler: Callable[[int], None], hup: Callable[[], None]) -> None:
        self.handler, self.hup = handler, hup

    def __enter__(self) -> None:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, self.handler, s)
        loop.add_signal_handler(signal.SIGHUP, self.hup)
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(s)


def _dump_tasks() -> None:
    """SIGUSR1: log where every task is waiting (for a bridge that seems stuck)."""
    for t in asyncio.all_tasks():
        frames = t.get_stack()
        where = " < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        log.info("event=task_dump task=%s at=%s", t.get_name(), where or "-")


def run(config: Config) -> int:
    # a SIGHUP before the loop handles it (while the start validates) is kept for the loop;
    # the default action would end the process
    hup = asyncio.Event()
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    asyncio.run(Bridge(config, hup).run())
    return 0
