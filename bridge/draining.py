"""The bridge's drain loops: wake-ups, retries, pause, schema changes.

One task per link takes both directions in turns (so a key is never applied
both ways at once); it waits on NOTIFY (LISTEN per source peer), a poll
timeout, or the end of the term. A failed attempt is retried by the loop,
and the retry first resumes the batches the direction claimed (the same batch,
never a new one past it). Errors and recoveries go to sync.status through
engine/hub/report.py. `Draining` is a part of bridge.daemon.Bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from syncbridge.engine import errors
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError
from syncbridge.engine.contract import Drain, SchemaChanged
from syncbridge.engine.hub import lease, report
from syncbridge.engine.postgres import session as pg_session
from syncbridge.engine.postgres.drain import PgDrain
from syncbridge.engine.validate import shapes

from .controls import LinkControls
from .listening import Listening
from .waits import HUB_ERRORS, backoff, retryable, wait_any

log = logging.getLogger("syncbridge.bridge")

PROBE_TIMEOUT = 2.0  # seconds for the "which database is unreachable" probe
# drains holding batches at once; one holds at most 4 connections of one peer: its source
# transactions (one committing, one applying, one taken ahead) and a hub write, or two
# sink connections (one flushing)
HELD_AT_ONCE = 4
POOL_SIZE = 4 * HELD_AT_ONCE + 2  # per peer: every held batch gets its connections
SCHEMA_PAUSE = "schema changed on peer"  # the pause reason a schema change gives
ALIVE = lease.SQL["alive"]
# NOTIFYs a second from one direction's writers before they are spared them (its wake lock
# is let go, bridge/listening.py): below it every commit wakes the loop at once
DISARM_WAKES = int(os.environ.get("SYNCBRIDGE_DISARM_WAKES", "1000"))
LINGER = 0.025  # seconds between looks while rows flow with no wake lock (no NOTIFY comes)
WINDOW = 0.25  # seconds over which NOTIFYs are counted


def _notified(d: Drain) -> bool:
    """A direction its writers wake by NOTIFY (not polled)."""
    return d.poll_interval is None and d.link.notify


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool connection goes back as it is: the bridge sets nothing session-wide
    (origin tags are transaction-local, settings are startup parameters, it never
    LISTENs or locks on pool connections), so asyncpg's default reset (advisory
    unlock, CLOSE ALL, UNLISTEN, RESET ALL: one round trip per release) is skipped.
    A transaction left open by a cancelled task is still rolled back."""
    if conn.is_in_transaction():
        await conn.execute("rollback")


class Draining(LinkControls, Listening):
    """Connections, drains and their loops for one term of leadership."""

    config: Config
    shapes: dict[str, LinkShape]
    links: set[str]  # the links whose lock this bridge holds: the only ones it drains
    pools: dict[str, asyncpg.Pool]
    mssql: dict[str, Any]
    drains: list[Drain]
    events: dict[str, asyncio.Event]
    control: asyncio.Event
    paused: dict[str, str]
    ticks: dict[str, float]
    tick_every: dict[str, float]
    failing: dict[str, float]
    to_clear: set[str]
    halt: asyncio.Event
    hb: float
    upkeep: asyncio.Event  # retries or resolutions asked for (the heartbeat tells)
    quiet: set[tuple[str, str]]  # (link, source side): claimed nothing since the last wake
    depths: dict[tuple[str, str], int]  # (link, source side): queued at the last sample
    batch_gate: asyncio.Semaphore  # PgDrain batches held at once (engine/postgres/drain.py)

    async def _fence(self) -> None:
        """Confirm the leadership before a batch (bridge.daemon.Bridge does)."""
        raise NotImplementedError

    async def _nap(self, seconds: float) -> None:
        """Sleep that the end of this term (stop or lost leadership) cuts short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.halt.wait(), seconds)

    # -- connections and drains ---------------------------------------------
    async def _connect(self) -> None:
        for name, peer in self.config.peers.items():
            if peer.dialect == "postgres" and name not in self.pools:
                self.pools[name] = await asyncpg.create_pool(
                    peer.dsn, min_size=1, max_size=POOL_SIZE, timeout=10, command_timeout=300,
                    # values travel and compare as text: pinned settings on both ends
                    server_settings=pg_session.settings("syncbridge"), reset=_keep_session,
                )
        self.drains = []
        self.batch_gate = asyncio.Semaphore(HELD_AT_ONCE)
        for shape in self.shapes.values():
            if shape.link.name not in self.links:  # another bridge holds it (bridge/sharing.py)
                continue
            for src, dst in shape.link.directions():
                d = self._make_drain(shape, src, dst)
                self.drains.append(d)
                # an error a previous run left in sync.status is cleared on our first success
                self.to_clear.add(d.name)
                self.events.setdefault(f"{shape.link.name}:{src}", asyncio.Event())
        self.events.setdefault("webhook", asyncio.Event())
        await self._publish_link_options()

    def _make_drain(self, shape: LinkShape, src: str, dst: str) -> Drain:
        """PgDrain between Postgres peers; the SQL Server drains when either side is one."""
        hub = self.pools[self.config.hub]
        max_attempts = self.config.setting("max_attempts")
        peers = [self.config.peers[shape.link.side(s).peer] for s in (src, dst)]
        if all(p.dialect == "postgres" for p in peers):
            return PgDrain(shape, src, self.pools[peers[0].name], self.pools[peers[1].name],
                           hub, max_attempts, self.batch_gate)
        from syncbridge.engine.sqlserver.drain import make_drain

        return make_drain(shape, src, dst, self.config, self.pools, self.mssql, hub,
                          max_attempts)

    def _by_link(self) -> dict[str, list[Drain]]:
        out: dict[str, list[Drain]] = {}
        for d in self.drains:
            out.setdefault(d.link.name, []).append(d)
        return out

    def _wake(self, link: str, side: str) -> None:
        ev = self.events.get(f"{link}:{side}")
        if ev is not None:
            ev.set()

    def _wake_all(self) -> None:
        for ev in self.events.values():
            ev.set()
        self.quiet.clear()
        self.control.set()

    def _quiet_directions(self) -> list[tuple[str, str]]:
        """Directions the bridge vouches have nothing queued: woken by NOTIFY on a
        healthy LISTEN, nothing queued at their last sample, nothing claimed since.
        Their depth is not sampled (no statement to the source while idle); the
        heartbeat keeps their sync.status sample fresh instead."""
        return sorted(k for k in self.quiet if self._vouched(k))

    def _vouched(self, key: tuple[str, str]) -> bool:
        """One direction (link, source side) of _quiet_directions. The stats round asks
        it of every direction each interval: building the list for each was O(links²),
        0.7 s of CPU a second with 1,000 idle links."""
        return key in self.quiet and self.depths.get(key) == 0

    # -- wake-ups ------------------------------------------------------------
    def _source_peers(self) -> set[str]:
        peers = {d.queue_peer for d in self.drains if d.queue_peer} | {self.config.hub}
        return {p for p in peers if self.config.peers[p].dialect == "postgres"}

    async def _retrying(self, name: str, fn: Callable[[], Awaitable[Any]],
                        before_retry: Callable[[], Awaitable[Any]] | None = None,
                        drain: Drain | None = None) -> Any:
        """fn() until it succeeds or the term ends; full-jitter backoff up to RETRY_MAX.

        before_retry runs first on every retry: for a drain, resuming the batches
        it claimed, so a batch whose apply failed is retried as the same batch.
        A drain's failures and recovery are reported in sync.status."""
        failures = 0
        while not self.halt.is_set():
            self.ticks[name] = time.monotonic()
            try:
                if failures and before_retry is not None:
                    await before_retry()
                result = await fn()
            except Exception as e:
                if not retryable(e):
                    raise
                failures += 1
                await self._on_failure(name, failures, e, drain)
                await self._nap(backoff(failures))
                continue
            if failures or name in self.to_clear:
                await self._on_recovered(name, failures, drain)
            self.ticks.pop(name, None)
            return result
        return 0

    async def _on_failure(self, name: str, attempt: int, exc: BaseException,
                          drain: Drain | None) -> None:
        log.warning("event=retry target=%s attempt=%d error=%s", name, attempt,
                    errors.describe(exc))
        self.failing.setdefault(name, time.monotonic())
        if drain is not None:
            self.quiet.discard((drain.link.name, drain.src))
        if errors.is_connection_error(exc):
            for pool in self.pools.values():  # none of the old connections is reused
                await pool.expire_connections()
        if drain is None:  # not a link direction (e.g. the webhook loop): the log has it
            return
        kind = await self._unreachable(drain) if errors.is_transient(exc) else None
        with contextlib.suppress(*HUB_ERRORS):  # the hub may be what failed; the log has it
            await report.error(self.pools[self.config.hub], drain, errors.describe(exc), kind,
                               PROBE_TIMEOUT)
            self.to_clear.add(name)

    async def _unreachable(self, drain: Drain) -> str | None:
        """'sink' or 'source' when that Postgres database does not answer, else None."""
        for role, side in (("sink", drain.dst), ("source", drain.src)):
            pool = self.pools.get(drain.link.side(side).peer)
            if pool is None:  # a SQL Server peer: its errors read as failing: <error>
                continue
            try:
                await pool.fetchval(ALIVE, timeout=PROBE_TIMEOUT)
            except Exception as e:
                if not retryable(e):
                    raise
                return role
        return None

    async def _on_recovered(self, name: str, failures: int, drain: Drain | None) -> None:
        since = self.failing.pop(name, None)
        cleared = None
        if drain is not None:
            try:
                cleared = await report.recovered(self.pools[self.config.hub], drain,
                                                 PROBE_TIMEOUT)
                self.to_clear.discard(name)
            except Exception as e:
                if not retryable(e):
                    raise
                self.to_clear.add(name)  # retried after the next successful attempt
        if failures or cleared is not None:
            took = f"{time.monotonic() - since:.2f}" if since is not None else "?"
            log.info("event=recovered target=%s attempts=%d failed_for_s=%s", name, failures,
                     took)

    # -- the loop of one link ------------------------------------------------------
    def _idle_wait(self, link: Any, drains: list[Drain]) -> float | None:
        """The longest idle wait: NOTIFY-woken links fall back to a slow poll; a
        change-tracking source (no NOTIFY) is polled at its own interval."""
        timeout_idle = self.config.setting("fallback_poll") if link.notify else None
        polled = [d.poll_interval for d in drains if d.poll_interval]
        if polled:
            timeout_idle = min([*polled, timeout_idle or polled[0]])
        return timeout_idle

    async def _drain_loop(self, drains: list[Drain]) -> None:
        """Both directions of a link take turns in one task, so a key is never
        applied both ways at once and the two sides' row_state cannot race."""
        link = drains[0].link
        events = [self.events[f"{link.name}:{d.src}"] for d in drains]
        floor = self.config.setting("poll_interval")
        ceiling = self.config.setting("max_poll_interval")
        timeout_idle = self._idle_wait(link, drains)
        idle = floor
        recovered = False
        held = ""  # why the link was last held
        self.tick_every[f"drain:{link.name}"] = max(timeout_idle or ceiling, 1.0)
        while not self.halt.is_set():
            self.ticks[f"drain:{link.name}"] = time.monotonic()
            if link.name in self.paused:  # held (sync.link_holds): nothing claimed until it flows
                held = self.paused[link.name] or ""
                for d in drains:  # its writers need not NOTIFY a loop that will not look,
                    key = (d.link.name, d.src)  # and what they queue is sampled, not
                    self.quiet.discard(key)  # vouched for; the first empty look after the
                    await self._disarm(key)  # resume takes the wake lock again
                # a NOTIFY sent before is no reason to look: cleared, or the loop spins
                # on it until the resume, which sets them again (_set_controls)
                for ev in events:
                    ev.clear()
                await wait_any([*events, self.control], self.halt, 1.0)
                continue
            if held.startswith(SCHEMA_PAUSE):  # a schema pause of an earlier term, adopted
                held = ""
                drains = await self._adopted(drains) or drains
            await self._fence()
            if not recovered:  # batches an earlier run claimed, before anything new
                for d in drains:
                    await self._retrying(d.name, d.recover, drain=d)
                recovered = True
            for ev in events:
                ev.clear()
            started = time.monotonic()
            self._limit_claims(link.name, drains)
            n, drains = await self._drain_round(drains)
            flowing = self._lingering(drains)
            if n:
                idle = floor
                await self._pace(link.name, n, started)  # sync.set_rate
                if not any(d.more for d in drains):  # each took all it saw: the next
                    # commit's NOTIFY wakes it; while rows flow none comes, and what
                    # gathers over LINGER is taken as one batch
                    await wait_any(events, self.halt, LINGER if flowing else floor)
                continue
            if flowing:  # ahead of a flow of rows: look again soon, no NOTIFY comes
                await wait_any(events, self.halt, LINGER)
                continue
            # something queued that no claim takes yet (deferred keys), or a writer that
            # did not notify still open (no wake lock): poll for it
            backlog = (any(self.depths.get((d.link.name, d.src), 1) for d in drains)
                       or self._unarmed(drains))
            await wait_any(events, self.halt, idle if backlog or not timeout_idle
                           else timeout_idle)
            idle = min(idle * 2, ceiling)

    async def _drain_round(self, drains: list[Drain]) -> tuple[int, list[Drain]]:
        """One batch per direction; a schema change pauses the link until adopted."""
        n = 0
        for d in drains:
            if self.halt.is_set():
                break
            key = (d.link.name, d.src)
            try:
                got = await self._retrying(d.name, d.drain_once, d.recover, drain=d) or 0
                if _notified(d):
                    got = await self._wake_lock(d, key, got)
            except SchemaChanged as e:
                return 1, await self._schema_pause(drains, e)  # drain again with the new shape
            if got:
                self.quiet.discard(key)
                self.depths.pop(key, None)  # sampled again before it is vouched for
            elif key in self.armed:  # a NOTIFY wakes it: nothing can be waiting unseen
                self.quiet.add(key)
            n += got
        return n, drains

    async def _wake_lock(self, d: Drain, key: tuple[str, str], got: int) -> int:
        """After a batch of `got` rows: let the wake lock go while writers notify faster
        than DISARM_WAKES a second (each NOTIFY holds its writer's commit behind every
        other notifying commit) and keep it let go while looks find rows; otherwise, and
        at the first look that finds nothing, hold it, taken before the loop waits, and
        drain once more when just taken, for the rows of writers that did not notify.
        Returns the rows drained."""
        if got and key in self.let_go:
            return got  # rows still flowing: looked at again after LINGER
        if got and key in self.armed and self._waking(key):
            await self._disarm(key)
            self.let_go.add(key)
            return got
        self.let_go.discard(key)
        if key in self.armed or not await self._arm(key, d.queue_peer or ""):
            return got
        return got + (await self._retrying(d.name, d.drain_once, d.recover, drain=d) or 0)

    def _waking(self, key: tuple[str, str], wakes: int = 0) -> bool:
        """Count `wakes` NOTIFYs; whether the direction's writers notify DISARM_WAKES times
        a second or more, over this window (WINDOW seconds) or the last one."""
        now = time.monotonic()
        start, count, last = self.wakes.get(key, (now, 0, 0))
        if now - start >= WINDOW:
            start, count, last = now, 0, count if now - start < 2 * WINDOW else 0
        self.wakes[key] = (start, count + wakes, last)
        return max(count + wakes, last) >= DISARM_WAKES * WINDOW

    def _unarmed(self, drains: list[Drain]) -> bool:
        """Whether a NOTIFY-woken direction has no wake lock: no NOTIFY would wake it."""
        return any(_notified(d) and (d.link.name, d.src) not in self.armed for d in drains)

    def _lingering(self, drains: list[Drain]) -> bool:
        """Whether a direction let its wake lock go while rows flow (looked at every LINGER)."""
        return any((d.link.name, d.src) in self.let_go for d in drains)

    async def _schema_pause(self, drains: list[Drain], exc: SchemaChanged) -> list[Drain]:
        """Pause the link (sync.pause, so sync.status says why) until `syncbridge adopt`
        resumes it, then re-validate it and carry on with drains of the new shape."""
        hub = self.pools[self.config.hub]
        name = exc.link
        reason = f"{SCHEMA_PAUSE} {exc.peer}: {exc.detail}"
        log.warning("event=schema_changed link=%s peer=%s table=%s change=%s action=paused",
                    name, exc.peer, exc.table, exc.detail.replace(" ", "_"))
        while not self.halt.is_set():
            await self._retrying(name, lambda r=reason: report.pause(hub, name, r))
            self.paused[name] = reason
            while name in self.paused and not self.halt.is_set():
                self.ticks[f"drain:{name}"] = time.monotonic()  # paused on purpose, not hung
                await wait_any([self.control], self.halt, 1.0)
            if self.halt.is_set():
                break
            try:
                return await self._adopted(drains, raise_invalid=True) or drains
            except ConfigError as e:
                reason = f"adopt could not validate: {e}"
        return drains

    async def _adopted(self, drains: list[Drain], raise_invalid: bool = False
                       ) -> list[Drain] | None:
        """The link re-validated after `syncbridge adopt` resumed it: drains of its
        new shape (None: it does not validate, the old drains stay and their schema
        check pauses the link again with the reason)."""
        name = drains[0].link.name
        try:
            shape = (await asyncio.to_thread(shapes, self.config, [name]))[name]
        except ConfigError:
            if raise_invalid:
                raise
            return None
        self.shapes[name] = shape
        fresh = [self._make_drain(shape, d.src, d.dst) for d in drains]
        self.drains = [d for d in self.drains if d.link.name != name] + fresh
        log.info("event=adopted link=%s", name)
        return fresh
