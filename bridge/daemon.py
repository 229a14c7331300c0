"""The bridge: one asyncio process that keeps every link drained.

Shape of a run:
- take the configuration's advisory lock on the hub (else wait as a hot
  standby, heartbeating, until the active bridge dies);
- LISTEN on every source peer (a wake-up only), then recover unfinished
  batches, then drain each (link, direction) in its own named task that waits
  on notify / poll timeout / stop, whichever comes first;
- a stats task samples queue depth into the hub, sends canaries and prunes;
  a control task follows sync.link_control (pause / resume);
- a failed attempt is retried by the running loop, and the retry first
  resumes the batches this direction has claimed (the same batch, never a
  new one past it); a lost leadership cancels every loop of the term at once;
- SIGTERM/SIGINT: stop claiming, let the batch in flight finish, exit 0.
  A second signal exits at once (nothing is lost: claimed batches recover).

Every task is named; a task that ends while the term runs ends the term with
a logged reason (`event=task_failed`), and the process exits unless the error
is one worth retrying (the hub went away: the bridge leads again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg

from syncbridge.bridge import metrics
from syncbridge.engine import conflicts, errors, sdnotify
from syncbridge.engine.config import Config, ConfigError
from syncbridge.engine.postgres import capture
from syncbridge.engine.postgres import session as pg_session
from syncbridge.engine.postgres.drain import PgDrain, Q, SchemaChanged
from syncbridge.engine.validate import shapes

log = logging.getLogger("syncbridge.bridge")

LISTEN_PING = 5.0  # seconds between pings of a LISTEN connection (its loss is seen at once)
RETRY_MAX = 1.0  # seconds; full-jitter backoff ceiling: flowing <= ~1 s after a fault heals
RELEAD_PAUSE = 0.5  # seconds between attempts to reach the hub and lead again
PROBE_TIMEOUT = 2.0  # seconds for the "which database is unreachable" probe
CONNECT_TIMEOUT = 15.0  # seconds for a term's pools to open, then the term starts over
CONTROL_CHANNEL = "syncbridge_control"  # sync.pause / sync.resume notify it


def _retryable(exc: BaseException) -> bool:
    return errors.is_transient(exc) or isinstance(exc, asyncpg.PostgresError)


# what a best-effort write to the hub may fail with (the log has the cause already)
_HUB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _backoff(failures: int) -> float:
    """Full jitter: uniform in [0, min(RETRY_MAX, 0.1 s * 2^n)]."""
    return random.uniform(0, min(RETRY_MAX, 0.1 * 2 ** failures))


def _json(value: Any) -> str:
    """JSON of a key parsed with Decimals: a Decimal goes as its exact text (a JSON
    string, which jsonb_to_recordset reads back into the numeric key column)."""
    return json.dumps(value, default=str)


class LostLeadership(Exception):
    """The hub connection holding the advisory lock is gone: stop draining."""


class Bridge:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.halt = asyncio.Event()  # this term ends: stop, or leadership lost
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.pools: dict[str, asyncpg.Pool] = {}
        self.mssql: dict[str, Any] = {}  # SQL Server peers (engine.mssql_peer.MssqlPeer)
        self.drains: list[PgDrain] = []
        self.events: dict[str, asyncio.Event] = {}
        self.control = asyncio.Event()  # sync.link_control changed
        self.paused: dict[str, str] = {}  # link -> reason
        self.ticks: dict[str, float] = {}  # loop -> last tick (monotonic)
        self.tick_every: dict[str, float] = {}  # loop -> its longest planned wait
        self.role = "starting"
        self.failing: dict[str, float] = {}  # drain name -> monotonic time of first failure
        self.to_clear: set[str] = set()  # drain names whose hub error is still to clear
        self.lock_conn: asyncpg.Connection | None = None
        self.leader_ok_at = 0.0
        self.hb = float(config.setting("heartbeat_interval"))
        self.metrics = metrics.Metrics(lambda: self.role)
        self.shapes = shapes(config)  # validate before anything starts

    # -- lifecycle --------------------------------------------------------
    async def run(self) -> None:
        with _signals(self._on_signal):
            sdnotify.notify("STATUS=connecting")
            side = [asyncio.create_task(self._watchdog(), name="watchdog")]
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
                        if not _retryable(e):
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

    async def _nap(self, seconds: float) -> None:
        """Sleep that the end of this term (stop or lost leadership) cuts short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.halt.wait(), seconds)

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
    def _lock_key(self) -> str:
        return "syncbridge:" + ",".join(sorted(self.config.links))

    async def _lead_once(self) -> None:
        hub_dsn = self.config.hub_peer.dsn
        lock_conn = await asyncpg.connect(hub_dsn, timeout=10,
                                          server_settings={"application_name": "syncbridge-leader"})
        self.halt = asyncio.Event()
        if self.stop.is_set():
            self.halt.set()
        try:
            await self._wait_for_lock(lock_conn)
            if self.stop.is_set():
                return
            await self._active(lock_conn)
        finally:
            self.role = "starting"
            if not lock_conn.is_closed():  # a clean stop: gone from sync.bridges at once
                with contextlib.suppress(*_HUB_ERRORS):
                    await lock_conn.execute(Q("forget_bridge"), self.instance, timeout=2)
            lock_conn.terminate()

    async def _wait_for_lock(self, conn: asyncpg.Connection) -> None:
        key = self._lock_key()
        announced = False
        while not self.stop.is_set():
            got = await conn.fetchval("select pg_try_advisory_lock(hashtext($1))", key)
            if got:
                return
            if not announced:
                log.info("event=standby instance=%s", self.instance)
                self.role = "standby"
                sdnotify.notify("READY=1\nSTATUS=standby")
                announced = True
            await self._heartbeat(conn)
            self.ticks = {"standby": time.monotonic()}
            await self._take_over_stale(conn, key)
            await self._sleep(self.hb / 2)

    async def _take_over_stale(self, conn: asyncpg.Connection, key: str) -> None:
        """The lock holder missed two heartbeats (SIGSTOP, hung loop, stalled network)
        but its session still holds the lock: end that session so a live bridge leads."""
        for r in await conn.fetch(Q("stale_leader"), key, self.hb):
            log.warning("event=stale_leader_fenced backend_pid=%s", r["pid"])
            await conn.execute("select pg_terminate_backend($1)", r["pid"])

    async def _heartbeat(self, conn: asyncpg.Connection) -> None:
        await conn.execute(Q("heartbeat"), self.instance, socket.gethostname(), os.getpid(),
                           self.role, self.hb, timeout=self.hb)

    async def _active(self, lock_conn: asyncpg.Connection) -> None:
        self.role = "active"
        self.lock_conn = lock_conn
        self.lost: str | None = None  # why the leadership was lost, once it is
        await self._heartbeat(lock_conn)  # before connecting: a standby sees us alive
        self.leader_ok_at = time.monotonic()
        log.info("event=active instance=%s links=%d", self.instance, len(self.shapes))
        self.ticks = {}
        self.paused = {}
        try:  # a pool's first connection to a server still recovering was seen to hang
            await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT)
            await self._read_control()  # before any drain starts: a paused link claims nothing
        except BaseException:
            await self._close_pools()
            raise
        tasks = [asyncio.create_task(self._guard_leadership(lock_conn), name="leader")]
        for peer in self._source_peers():
            tasks.append(asyncio.create_task(self._listen(peer), name=f"listen:{peer}"))
        for link, drains in self._by_link().items():
            tasks.append(asyncio.create_task(self._drain_loop(drains), name=f"drain:{link}"))
        tasks.append(asyncio.create_task(self._stats_loop(), name="stats"))
        tasks.append(asyncio.create_task(self._control_loop(), name="control"))
        tasks.append(asyncio.create_task(self._extra_loops(), name="extra"))
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
            await self._shutdown(tasks, stopper, graceful and self.stop.is_set())
            self.lock_conn = None
            await self._close_pools()
            self.drains.clear()

    async def _term_ends(self) -> None:
        """Until the term ends: halted, or stopped (a signal, or `stop` set by a caller)."""
        await _wait_any([self.halt], self.stop, None)
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

    async def _guard_leadership(self, conn: asyncpg.Connection) -> None:
        rounds = 0
        while not self.halt.is_set():
            await self._check_leader(conn)
            if rounds % 60 == 0:
                with contextlib.suppress(*_HUB_ERRORS):
                    await conn.execute(Q("prune_bridges"), timeout=self.hb)
            rounds += 1
            await self._nap(self.hb / 2)

    async def _check_leader(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.fetchval("select 1", timeout=self.hb)
            await self._heartbeat(conn)
        except Exception as e:
            if not _retryable(e):
                raise
            self.lost = errors.describe(e)
            self.halt.set()
            raise LostLeadership(self.lost) from e
        self.leader_ok_at = time.monotonic()

    async def _fence(self) -> None:
        """Before a batch: if the leadership was last confirmed two heartbeats ago (the
        process was stopped or starved), confirm it now instead of racing a new leader."""
        if time.monotonic() - self.leader_ok_at > 2 * self.hb and self.lock_conn is not None:
            await self._check_leader(self.lock_conn)

    # -- connections -----------------------------------------------------------
    async def _connect(self) -> None:
        for name, peer in self.config.peers.items():
            if peer.dialect == "postgres" and name not in self.pools:
                self.pools[name] = await asyncpg.create_pool(
                    peer.dsn, min_size=1, max_size=4, timeout=10, command_timeout=300,
                    # values travel and compare as text: pinned settings on both ends
                    server_settings=pg_session.settings("syncbridge"),
                )
        hub = self.pools[self.config.hub]
        max_attempts = self.config.setting("max_attempts")
        self.drains = []
        for shape in self.shapes.values():
            for src, dst in shape.link.directions():
                d = self._make_drain(shape, src, dst, hub, max_attempts)
                self.drains.append(d)
                # an error a previous run left in sync.status is cleared on our first success
                self.to_clear.add(d.name)
                self.events.setdefault(f"{shape.link.name}:{src}", asyncio.Event())
        self.events.setdefault("webhook", asyncio.Event())

    def _make_drain(self, shape: Any, src: str, dst: str, hub: asyncpg.Pool,
                    max_attempts: int) -> Any:
        """PgDrain between Postgres peers; the SQL Server drains when either side is one."""
        peers = [self.config.peers[shape.link.side(s).peer] for s in (src, dst)]
        if all(p.dialect == "postgres" for p in peers):
            return PgDrain(shape, src, self.pools[peers[0].name], self.pools[peers[1].name],
                           hub, max_attempts)
        from syncbridge.engine.sqlserver.drain import make_drain

        return make_drain(shape, src, dst, self.config, self.pools, self.mssql, hub,
                          max_attempts)

    def _source_peers(self) -> set[str]:
        peers = {d.link.side(d.src).peer for d in self.drains} | {self.config.hub}
        return {p for p in peers if self.config.peers[p].dialect == "postgres"}

    def _wake_all(self) -> None:
        for ev in self.events.values():
            ev.set()
        self.control.set()

    async def _listen(self, peer: str) -> None:
        """LISTEN as a wake-up; on any failure reconnect with backoff and wake everyone.

        A terminated backend is seen at once (asyncpg's termination listener), not
        at the next ping; the ping catches a connection that silently stalls."""
        dsn = self.config.peers[peer].dsn
        failures = 0
        while not self.halt.is_set():
            conn = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    dsn, timeout=10, server_settings={"application_name": "syncbridge-listen"})
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                await conn.add_listener(capture.NOTIFY_CHANNEL, self._on_notify)
                if peer == self.config.hub:
                    await conn.add_listener(CONTROL_CHANNEL, self._on_control)
                if failures:
                    log.info("event=listen_restored peer=%s", peer)
                failures = 0
                self._wake_all()  # catch up on anything sent while we were not listening
                self.tick_every[f"listen:{peer}"] = LISTEN_PING
                while not self.halt.is_set():
                    self.ticks[f"listen:{peer}"] = time.monotonic()
                    await _wait_any([lost], self.halt, LISTEN_PING)
                    if lost.is_set():
                        raise ConnectionError("LISTEN connection lost")
                    await conn.fetchval("select 1", timeout=5)
            except Exception as e:
                if not _retryable(e):
                    raise
                failures += 1
                log.warning("event=listen_lost peer=%s error=%s", peer, errors.describe(e))
                self.ticks[f"listen:{peer}"] = time.monotonic()
                await self._nap(_backoff(failures))
            finally:
                if conn is not None:
                    conn.terminate()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        ev = self.events.get(payload)
        if ev is not None:
            ev.set()

    def _on_control(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self.control.set()

    async def _read_control(self) -> None:
        """Take sync.link_control's paused links as this bridge's self.paused."""
        rows = await self.pools[self.config.hub].fetch(Q("paused_links"), timeout=self.hb)
        paused = {r["link"]: r["paused_reason"] for r in rows}
        for link in paused.keys() - self.paused.keys():
            log.info("event=paused link=%s reason=%s", link, paused[link])
        for link in self.paused.keys() - paused.keys():
            log.info("event=resumed link=%s", link)
            for key, ev in self.events.items():
                if key.startswith(f"{link}:"):
                    ev.set()
        self.paused = paused

    async def _control_loop(self) -> None:
        """Follow sync.link_control: a paused link is not drained (its signals queue)."""
        while not self.halt.is_set():
            self.ticks["control"] = time.monotonic()
            self.control.clear()
            try:
                await self._read_control()
            except Exception as e:
                if not _retryable(e):
                    raise
                log.warning("event=control_failed error=%s", errors.describe(e))
            await _wait_any([self.control], self.halt, 1.0)

    # -- draining --------------------------------------------------------------
    async def _retrying(self, name: str, fn: Callable[[], Awaitable[Any]],
                        before_retry: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """fn() until it succeeds or the term ends; full-jitter backoff up to RETRY_MAX.

        before_retry runs first on every retry: for a drain, resuming the batches
        it claimed, so a batch whose apply failed is retried as the same batch."""
        failures = 0
        while not self.halt.is_set():
            self.ticks[name] = time.monotonic()
            try:
                if failures and before_retry is not None:
                    await before_retry()
                result = await fn()
            except Exception as e:
                if not _retryable(e):
                    raise
                failures += 1
                await self._on_failure(name, failures, e)
                await self._nap(_backoff(failures))
                continue
            if failures or name in self.to_clear:
                await self._on_recovered(name, failures)
            self.ticks.pop(name, None)
            return result
        return 0

    async def _on_failure(self, name: str, attempt: int, exc: BaseException) -> None:
        log.warning("event=retry target=%s attempt=%d error=%s", name, attempt,
                    errors.describe(exc))
        self.failing.setdefault(name, time.monotonic())
        if errors.is_connection_error(exc):
            for pool in self.pools.values():  # none of the old connections is reused
                await pool.expire_connections()
        drain = self._drain_named(name)
        if drain is None:  # not a link direction (e.g. the webhook loop): the log has it
            return
        kind = await self._unreachable(drain) if errors.is_transient(exc) else None
        with contextlib.suppress(*_HUB_ERRORS):  # the hub may be what failed; the log has it
            await self.pools[self.config.hub].execute(
                Q("report_error"), drain.link.name, drain.src, errors.describe(exc)[:2000],
                kind, timeout=PROBE_TIMEOUT)
            self.to_clear.add(name)

    async def _unreachable(self, drain: Any) -> str | None:
        """'sink' or 'source' when that Postgres database does not answer, else None."""
        for role, side in (("sink", drain.dst), ("source", drain.src)):
            pool = self.pools.get(drain.link.side(side).peer)
            if pool is None:  # a SQL Server peer: its errors read as failing: <error>
                continue
            try:
                await pool.fetchval("select 1", timeout=PROBE_TIMEOUT)
            except Exception as e:
                if not _retryable(e):
                    raise
                return role
        return None

    async def _on_recovered(self, name: str, failures: int) -> None:
        since = self.failing.pop(name, None)
        drain = self._drain_named(name)
        cleared = None
        if drain is not None:
            try:
                cleared = await self.pools[self.config.hub].fetchrow(
                    Q("report_recovered"), drain.link.name, drain.src, timeout=PROBE_TIMEOUT)
                self.to_clear.discard(name)
            except Exception as e:
                if not _retryable(e):
                    raise
                self.to_clear.add(name)  # retried after the next successful attempt
        if failures or cleared is not None:
            took = f"{time.monotonic() - since:.2f}" if since is not None else "?"
            log.info("event=recovered target=%s attempts=%d failed_for_s=%s", name, failures,
                     took)

    def _drain_named(self, name: str) -> Any:
        return next((d for d in self.drains if d.name == name), None)

    def _by_link(self) -> dict[str, list[PgDrain]]:
        out: dict[str, list[PgDrain]] = {}
        for d in self.drains:
            out.setdefault(d.link.name, []).append(d)
        return out

    async def _drain_loop(self, drains: list[PgDrain]) -> None:
        """Both directions of a link take turns in one task, so a key is never
        applied both ways at once and the two sides' row_state cannot race."""
        link = drains[0].link
        events = [self.events[f"{link.name}:{d.src}"] for d in drains]
        floor = self.config.setting("poll_interval")
        ceiling = self.config.setting("max_poll_interval")
        timeout_idle = self.config.setting("fallback_poll") if link.notify else None
        # a change-tracking source has no NOTIFY: it is polled (cheap version check)
        polled = [d.poll_interval for d in drains if getattr(d, "poll_interval", None)]
        if polled:
            timeout_idle = min([*polled, timeout_idle or polled[0]])
        idle = floor
        recovered = False
        self.tick_every[f"drain:{link.name}"] = max(timeout_idle or ceiling, 1.0)
        while not self.halt.is_set():
            self.ticks[f"drain:{link.name}"] = time.monotonic()
            if link.name in self.paused:  # sync.pause: nothing claimed until resumed
                await _wait_any([*events, self.control], self.halt, 1.0)
                continue
            await self._fence()
            if not recovered:  # batches an earlier run claimed, before anything new
                for d in drains:
                    await self._retrying(d.name, d.recover)
                recovered = True
            for ev in events:
                ev.clear()
            n = 0
            for d in drains:
                if self.halt.is_set():
                    break
                try:
                    n += await self._retrying(d.name, d.drain_once, d.recover) or 0
                except SchemaChanged as e:
                    drains = await self._schema_pause(drains, e)
                    n = 1  # drain again at once with the adopted shape
                    break
            if n:
                idle = floor
                continue
            await _wait_any(events, self.halt, timeout_idle or idle)
            idle = min(idle * 2, ceiling)

    async def _schema_pause(self, drains: list[PgDrain], exc: SchemaChanged) -> list[PgDrain]:
        """Pause the link (sync.pause, so sync.status says why) until `syncbridge adopt`
        resumes it, then re-validate it and carry on with drains of the new shape."""
        hub = self.pools[self.config.hub]
        name = exc.link
        reason = f"schema changed on peer {exc.peer}: {exc.detail}"
        log.warning("event=schema_changed link=%s peer=%s table=%s change=%s action=paused",
                    name, exc.peer, exc.table, exc.detail.replace(" ", "_"))
        while not self.halt.is_set():
            await self._retrying(name, lambda r=reason: hub.execute(Q("pause_link"), name, r))
            self.paused[name] = reason
            while name in self.paused and not self.halt.is_set():
                self.ticks[f"drain:{name}"] = time.monotonic()  # paused on purpose, not hung
                await _wait_any([self.control], self.halt, 1.0)
            if self.halt.is_set():
                break
            try:
                shape = (await asyncio.to_thread(shapes, self.config, [name]))[name]
            except ConfigError as e:
                reason = f"adopt could not validate: {e}"
                continue
            self.shapes[name] = shape
            max_attempts = self.config.setting("max_attempts")
            fresh = [self._make_drain(shape, d.src, d.dst, hub, max_attempts) for d in drains]
            self.drains = [d for d in self.drains if d.link.name != name] + fresh
            log.info("event=adopted link=%s", name)
            return fresh
        return drains

    async def _stats_loop(self) -> None:
        hub = self.pools[self.config.hub]
        interval = self.config.setting("stats_interval")
        canary_every = self.config.setting("canary_interval")
        prune_every = self.config.setting("prune_interval")
        last_canary = last_prune = float("-inf")
        while not self.halt.is_set():
            self.ticks["stats"] = time.monotonic()
            try:
                await self._sample(hub)
                await self._retry_dead_letters(hub)
                await self._enact_resolutions(hub)
                if canary_every and time.monotonic() - last_canary >= canary_every:
                    last_canary = time.monotonic()
                    await self._send_canaries(hub)
                if time.monotonic() - last_prune >= prune_every:
                    last_prune = time.monotonic()
                    await self._prune(hub)
                if self.config.setting("metrics"):
                    self.metrics.update(await hub.fetch("select * from sync.status"))
            except Exception as e:
                if not _retryable(e):
                    raise
                log.warning("event=stats_failed error=%s", errors.describe(e))
            await self._nap(interval)

    async def _sample(self, hub: asyncpg.Pool) -> None:
        open_links = {
            (r["link"], r["source_side"]) for r in await hub.fetch(
                "select distinct link, source_side from sync.dead_letter where status <> 'closed'"
            )
        }
        stall, stale = self.config.setting("stall_after"), self.config.setting("stale_after")
        for d in self.drains:
            queued, oldest = await d.depth()
            local = d.link.side(d.src).peer == self.config.hub and isinstance(d, PgDrain)
            await hub.execute(Q("report_depth"), d.link.name, d.src, queued, oldest, local,
                              float(stall), float(stale))
            d.open_dead_letters = (d.link.name, d.src) in open_links

    async def _send_canaries(self, hub: asyncpg.Pool) -> None:
        """One canary per Postgres-to-Postgres direction whose last one has arrived."""
        pending = {(r["link"], r["source_side"]) for r in await hub.fetch(
            "select link, source_side from sync.link_state "
            "where canary_sent_at > coalesce(canary_seen_sent_at, '-infinity')")}
        for d in self.drains:
            if (not isinstance(d, PgDrain) or d.link.name in self.paused
                    or (d.link.name, d.src) in pending):
                continue
            sent = await d.source.fetchval(Q("canary_send"), d.link.name, d.src)
            await hub.execute(Q("canary_sent"), d.link.name, d.src, sent)
            self.events[f"{d.link.name}:{d.src}"].set()

    async def _prune(self, hub: asyncpg.Pool) -> None:
        """Retention ([bridge] *_days): Postgres sinks' applied batches, the hub's logs."""
        sinks = {d.link.side(d.dst).peer for d in self.drains if isinstance(d, PgDrain)}
        days = float(self.config.setting("applied_batches_days"))
        for peer in sorted(sinks):
            status = await self.pools[peer].execute(Q("prune_applied"), days)
            log.info("event=pruned table=applied_batches peer=%s rows=%s", peer,
                     status.split()[-1])
        await hub.execute(Q("prune_apply_log"))
        for query, key in (("prune_check_runs", "check_runs_days"),
                           ("prune_conflicts", "resolved_conflicts_days")):
            status = await hub.execute(Q(query), float(self.config.setting(key)))
            log.info("event=pruned table=%s rows=%s", query.removeprefix("prune_"),
                     status.split()[-1])

    async def _retry_dead_letters(self, hub: asyncpg.Pool) -> None:
        """Turn sync.retry_dead() requests into fresh signals at the source."""
        rows = await hub.fetch(
            "select id, link, source_side, key::text as key from sync.dead_letter "
            "where status = 'retry'"
        )
        for r in rows:
            link = self.config.links.get(r["link"])
            if link is None:
                continue
            source = self.pools.get(link.side(r["source_side"]).peer)
            if source is None:  # a SQL Server source has no queue: its drain re-reads the key
                continue
            await source.execute(
                "insert into sync.queue (link, side, key) values ($1, $2, $3::jsonb)",
                r["link"], r["source_side"], r["key"],
            )
            await hub.execute("update sync.dead_letter set status = 'open' where id = $1", r["id"])
            self.events[f"{r['link']}:{r['source_side']}"].set()

    async def _enact_resolutions(self, hub: asyncpg.Pool) -> None:
        """sync.resolve_conflict() chose a winner: send the winner's row, unchecked."""
        for r in await hub.fetch(Q("resolving_conflicts")):
            shape = self.shapes.get(r["link"])
            if shape is None:
                continue
            winner = r["winner"]
            ka = json.loads(r["key"], parse_float=Decimal)  # a numeric key keeps its digits
            key = {w: ka[a] for a, w in zip(shape.key_cols("a"), shape.key_cols(winner),
                                            strict=True)}
            if shape.link.conflict == "merge":  # keep the loser's edits of other columns
                await self._write_settled_merge(shape, r, winner, key)
            source = self.pools[shape.link.side(winner).peer]
            await source.execute(Q("resignal"), r["link"], winner, _json([key]))
            await hub.execute(Q("conflict_resolved"), r["id"])
            self.events[f"{r['link']}:{winner}"].set()
            log.info("event=conflict_resolved id=%s link=%s winner=%s", r["id"], r["link"], winner)

    async def _write_settled_merge(self, shape: Any, r: Any, winner: str, key: dict) -> None:
        merged = conflicts.settled_merge(shape.link, conflicts.load(r["a"]),
                                         conflicts.load(r["b"]), conflicts.load(r["last"]),
                                         winner)
        [drain] = [d for d in self.drains if d.link.name == shape.link.name and d.dst == winner]
        await drain.write_settled(merged, _json(key))

    async def _extra_loops(self) -> None:
        """Webhook events, and scheduled checks / resync requests (engine.reconcile)."""
        from syncbridge.engine.reconcile.schedule import background_checks

        await asyncio.gather(self._webhook_loop(),
                             background_checks(self.config, self.halt, self.shapes))

    async def _webhook_loop(self) -> None:
        """Webhook events queued on the hub: applied to their mapped tables."""
        if not self.config.raw.get("webhooks", {}).get("sources"):
            await self.halt.wait()
            return
        from syncbridge.engine.webhooks.apply import drain_webhook_events, prune_webhook_events

        hub = self.pools[self.config.hub]
        ev = self.events["webhook"]
        last_prune = 0.0
        while not self.halt.is_set():
            self.ticks["webhooks"] = time.monotonic()
            ev.clear()
            n = await self._retrying("webhooks", lambda: drain_webhook_events(
                hub, self.pools, self.config))
            if n:
                continue
            if time.monotonic() - last_prune > 3600:
                await self._retrying("webhooks", lambda: prune_webhook_events(hub, self.config))
                last_prune = time.monotonic()
            await _wait_any([ev], self.halt, self.config.setting("fallback_poll"))

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:  # not under systemd's watchdog: idle until the bridge stops
            await self.stop.wait()
            return
        while True:
            await asyncio.sleep(interval)
            if self.health()[0]:
                sdnotify.notify("WATCHDOG=1")


async def _wait_any(events: list[asyncio.Event], stop: asyncio.Event,
                    timeout: float | None) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in [*events, stop]]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class _signals:
    """Install SIGTERM/SIGINT handlers on the loop and restore the old ones on exit."""

    def __init__(self, handler: Callable[[int], None]) -> None:
        self.handler = handler

    def __enter__(self) -> None:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, self.handler, s)
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            loop.remove_signal_handler(s)


def _dump_tasks() -> None:
    """SIGUSR1: log where every task is waiting (for a bridge that seems stuck)."""
    for t in asyncio.all_tasks():
        frames = t.get_stack()
        where = " < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        log.info("event=task_dump task=%s at=%s", t.get_name(), where or "-")


def run(config: Config) -> int:
    asyncio.run(Bridge(config).run())
    return 0
