"""The bridge: one asyncio process that keeps every link drained.

Shape of a run:
- take the configuration's advisory lock on the hub (else wait as a hot
  standby, heartbeating, until the active bridge dies);
- LISTEN on every source peer (a wake-up only), then recover unfinished
  batches, then drain each (link, direction) in its own named task that waits
  on notify / poll timeout / stop, whichever comes first;
- a stats task samples queue depth into the hub and heartbeats;
- SIGTERM/SIGINT: stop claiming, let the batch in flight finish, exit 0.
  A second signal exits at once (nothing is lost: claimed batches recover).
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
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception, wait_random_exponential

from syncbridge.engine import capture, conflicts, errors, pg_session, sdnotify
from syncbridge.engine.config import Config, ConfigError
from syncbridge.engine.drain import PgDrain, Q, SchemaChanged
from syncbridge.engine.validate import shapes

log = logging.getLogger("syncbridge.bridge")

LISTEN_PING = 5.0  # seconds between liveness checks of a LISTEN connection
LEADER_PING = 1.0  # seconds between checks that we still hold the advisory lock
WATCHDOG_STALE = 30.0  # seconds without a drain-loop tick before the watchdog starves


def _retryable(exc: BaseException) -> bool:
    return errors.is_transient(exc) or isinstance(exc, asyncpg.PostgresError)


class LostLeadership(Exception):
    """The hub connection holding the advisory lock is gone: stop draining."""


class Bridge:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.pools: dict[str, asyncpg.Pool] = {}
        self.mssql: dict[str, Any] = {}  # SQL Server peers (engine.mssql_peer.MssqlPeer)
        self.drains: list[PgDrain] = []
        self.events: dict[str, asyncio.Event] = {}
        self.ticks: dict[str, float] = {}
        self.role = "starting"
        self.shapes = shapes(config)  # validate before anything starts

    # -- lifecycle --------------------------------------------------------
    async def run(self) -> None:
        with _signals(self._on_signal):
            sdnotify.notify("STATUS=connecting")
            watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
            try:
                while not self.stop.is_set():
                    try:
                        await self._lead_once()
                    except LostLeadership as e:
                        log.warning("event=leadership_lost reason=%s", e)
                    except Exception as e:
                        if not _retryable(e):
                            raise
                        log.warning("event=hub_unavailable error=%s", errors.describe(e))
                        await self._sleep(1.0)
            finally:
                watchdog.cancel()
                await self._close_pools()
        log.info("event=stopped instance=%s", self.instance)

    def _on_signal(self, signum: int) -> None:
        if self.stop.is_set():
            log.warning("event=forced_exit signal=%s", signal.Signals(signum).name)
            os._exit(1)
        log.info("event=stopping signal=%s", signal.Signals(signum).name)
        sdnotify.notify("STOPPING=1")
        self.stop.set()

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

    # -- leadership ----------------------------------------------------------
    def _lock_key(self) -> str:
        return "syncbridge:" + ",".join(sorted(self.config.links))

    async def _lead_once(self) -> None:
        hub_dsn = self.config.hub_peer.dsn
        lock_conn = await asyncpg.connect(hub_dsn, timeout=10,
                                          server_settings={"application_name": "syncbridge-leader"})
        try:
            await self._wait_for_lock(lock_conn)
            if self.stop.is_set():
                return
            await self._active(lock_conn)
        finally:
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
            await self._sleep(1.0)

    async def _heartbeat(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            """insert into sync.bridges (instance, host, pid, role) values ($1, $2, $3, $4)
               on conflict (instance) do update set role = excluded.role,
                      heartbeat = clock_timestamp()""",
            self.instance, socket.gethostname(), os.getpid(), self.role,
        )

    async def _active(self, lock_conn: asyncpg.Connection) -> None:
        self.role = "active"
        log.info("event=active instance=%s links=%d", self.instance, len(self.shapes))
        await self._connect()
        tasks = [asyncio.create_task(self._guard_leadership(lock_conn), name="leader")]
        for peer in self._source_peers():
            tasks.append(asyncio.create_task(self._listen(peer), name=f"listen:{peer}"))
        for link, drains in self._by_link().items():
            tasks.append(asyncio.create_task(self._drain_loop(drains), name=f"drain:{link}"))
        tasks.append(asyncio.create_task(self._stats_loop(), name="stats"))
        tasks.append(asyncio.create_task(self._extra_loops(), name="extra"))
        sdnotify.notify("READY=1\nSTATUS=active")
        stopper = asyncio.create_task(self.stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception():
                    log.error("event=task_failed task=%s error=%r", t.get_name(), t.exception())
                    raise t.exception()
        finally:
            await self._shutdown(tasks, stopper)
            await self._close_pools()
            self.drains.clear()

    async def _shutdown(self, tasks: list[asyncio.Task], stopper: asyncio.Task) -> None:
        """Drain loops see the stop flag between batches; give them time, then cancel."""
        stopper.cancel()
        drains = [t for t in tasks if t.get_name().startswith("drain:")]
        others = [t for t in tasks if t not in drains]
        for t in others:
            t.cancel()
        if drains:
            _, pending = await asyncio.wait(drains, timeout=20)
            for t in pending:
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _guard_leadership(self, conn: asyncpg.Connection) -> None:
        while not self.stop.is_set():
            try:
                await conn.fetchval("select 1", timeout=5)
                await self._heartbeat(conn)
                await conn.execute("delete from sync.bridges where heartbeat < "
                                   "clock_timestamp() - interval '1 minute'")
            except Exception as e:
                raise LostLeadership(errors.describe(e)) from e
            await self._sleep(LEADER_PING)

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
                self.events.setdefault(f"{shape.link.name}:{src}", asyncio.Event())
        self.events.setdefault("webhook", asyncio.Event())

    def _make_drain(self, shape: Any, src: str, dst: str, hub: asyncpg.Pool,
                    max_attempts: int) -> Any:
        """PgDrain between Postgres peers; the SQL Server drains when either side is one."""
        peers = [self.config.peers[shape.link.side(s).peer] for s in (src, dst)]
        if all(p.dialect == "postgres" for p in peers):
            return PgDrain(shape, src, self.pools[peers[0].name], self.pools[peers[1].name],
                           hub, max_attempts)
        from syncbridge.engine.mssql_drain import make_drain

        return make_drain(shape, src, dst, self.config, self.pools, self.mssql, hub,
                          max_attempts)

    def _source_peers(self) -> set[str]:
        peers = {d.link.side(d.src).peer for d in self.drains} | {self.config.hub}
        return {p for p in peers if self.config.peers[p].dialect == "postgres"}

    def _wake_all(self) -> None:
        for ev in self.events.values():
            ev.set()

    async def _listen(self, peer: str) -> None:
        """LISTEN as a wake-up; on any failure reconnect with backoff and wake everyone."""
        dsn = self.config.peers[peer].dsn
        failures = 0
        while not self.stop.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(
                    dsn, timeout=10, server_settings={"application_name": "syncbridge-listen"})
                await conn.add_listener(capture.NOTIFY_CHANNEL, self._on_notify)
                failures = 0
                self._wake_all()  # catch up on anything sent while we were not listening
                while not self.stop.is_set():
                    await self._sleep(LISTEN_PING)
                    await conn.fetchval("select 1", timeout=5)
            except Exception as e:
                if not _retryable(e):
                    raise
                failures += 1
                log.warning("event=listen_lost peer=%s error=%s", peer, errors.describe(e))
                # full jitter, like the drain retries: uniform in [0, min(10 s, 0.2 s * 2^n)]
                await self._sleep(random.uniform(0, min(10.0, 0.2 * 2 ** failures)))
            finally:
                if conn is not None:
                    conn.terminate()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        ev = self.events.get(payload)
        if ev is not None:
            ev.set()

    # -- draining --------------------------------------------------------------
    async def _retrying(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        src_link = name
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_random_exponential(multiplier=0.1, max=10),
            sleep=self._sleep,
            before_sleep=lambda rs: self._on_retry(src_link, rs),
            reraise=True,
        ):
            with attempt:
                if self.stop.is_set() and attempt.retry_state.attempt_number > 1:
                    return 0
                return await fn()
        return 0

    def _on_retry(self, name: str, state: Any) -> None:
        exc = state.outcome.exception()
        log.warning("event=retry target=%s attempt=%d error=%s", name,
                    state.attempt_number, errors.describe(exc))
        loop = asyncio.get_running_loop()
        if errors.is_connection_error(exc):
            for pool in self.pools.values():  # none of the old connections is reused
                loop.create_task(pool.expire_connections())
        loop.create_task(self._report_error(name, exc))

    async def _report_error(self, name: str, exc: BaseException) -> None:
        link, _, rest = name.partition(":")
        if not rest:  # not a link direction (e.g. the webhook loop): the log has it
            return
        with contextlib.suppress(Exception):  # the hub may be what failed; the log has it
            await self.pools[self.config.hub].execute(
                Q("report_error"), link, rest[:1], errors.describe(exc)[:2000]
            )

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
        for d in drains:
            await self._retrying(d.name, d.recover)
        while not self.stop.is_set():
            self.ticks[link.name] = time.monotonic()
            for ev in events:
                ev.clear()
            n = 0
            for d in drains:
                if self.stop.is_set():
                    break
                try:
                    n += await self._retrying(d.name, d.drain_once)
                except SchemaChanged as e:
                    drains = await self._schema_pause(drains, e)
                    n = 1  # drain again at once with the adopted shape
                    break
            if n:
                idle = floor
                continue
            await _wait_any(events, self.stop, timeout_idle or idle)
            idle = min(idle * 2, ceiling)

    async def _schema_pause(self, drains: list[PgDrain], exc: SchemaChanged) -> list[PgDrain]:
        """Pause the link with the reason until `syncbridge adopt` resumes it, then
        re-validate it and carry on with drains of the new shape."""
        hub = self.pools[self.config.hub]
        name = exc.link
        reason = f"schema changed on peer {exc.peer}: {exc.detail}"
        log.warning("event=schema_changed link=%s peer=%s table=%s change=%s action=paused",
                    name, exc.peer, exc.table, exc.detail.replace(" ", "_"))
        await self._retrying(name, lambda: hub.execute(Q("pause_link"), name, reason, "bridge"))
        while not self.stop.is_set():
            self.ticks[name] = time.monotonic()  # paused on purpose, not hung
            paused = await self._retrying(name, lambda: hub.fetchval(Q("link_paused"), name))
            if paused is None:
                try:
                    shape = (await asyncio.to_thread(shapes, self.config, [name]))[name]
                except ConfigError as e:
                    reason = f"adopt could not validate: {e}"
                    await hub.execute(Q("pause_link"), name, reason, "bridge")
                    continue
                break
            await self._sleep(1.0)
        else:
            return drains
        self.shapes[name] = shape
        max_attempts = self.config.setting("max_attempts")
        fresh = [self._make_drain(shape, d.src, d.dst, hub, max_attempts) for d in drains]
        self.drains = [d for d in self.drains if d.link.name != name] + fresh
        log.info("event=adopted link=%s", name)
        return fresh

    async def _stats_loop(self) -> None:
        hub = self.pools[self.config.hub]
        interval = self.config.setting("stats_interval")
        rounds = 0
        while not self.stop.is_set():
            try:
                await self._sample(hub)
                await self._retry_dead_letters(hub)
                await self._enact_resolutions(hub)
                if rounds % 600 == 0:
                    await hub.execute(Q("prune_apply_log"))
            except Exception as e:
                if not _retryable(e):
                    raise
                log.warning("event=stats_failed error=%s", errors.describe(e))
            rounds += 1
            await self._sleep(interval)

    async def _sample(self, hub: asyncpg.Pool) -> None:
        open_links = {
            (r["link"], r["source_side"]) for r in await hub.fetch(
                "select distinct link, source_side from sync.dead_letter where status <> 'closed'"
            )
        }
        for d in self.drains:
            queued, oldest = await d.depth()
            await hub.execute(Q("report_depth"), d.link.name, d.src, queued, oldest)
            d.open_dead_letters = (d.link.name, d.src) in open_links

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
            ka = json.loads(r["key"])
            key = {w: ka[a] for a, w in zip(shape.key_cols("a"), shape.key_cols(winner),
                                            strict=True)}
            if shape.link.conflict == "merge":  # keep the loser's edits of other columns
                await self._write_settled_merge(shape, r, winner, key)
            source = self.pools[shape.link.side(winner).peer]
            await source.execute(Q("resignal"), r["link"], winner, json.dumps([key]))
            await hub.execute(Q("conflict_resolved"), r["id"])
            self.events[f"{r['link']}:{winner}"].set()
            log.info("event=conflict_resolved id=%s link=%s winner=%s", r["id"], r["link"], winner)

    async def _write_settled_merge(self, shape: Any, r: Any, winner: str, key: dict) -> None:
        merged = conflicts.settled_merge(shape.link, conflicts.load(r["a"]),
                                         conflicts.load(r["b"]), conflicts.load(r["last"]),
                                         winner)
        [drain] = [d for d in self.drains if d.link.name == shape.link.name and d.dst == winner]
        await drain.write_settled(merged, json.dumps(key))

    async def _extra_loops(self) -> None:
        """Webhook events, and scheduled checks / resync requests (engine.reconcile)."""
        from syncbridge.engine.reconcile import background_checks

        await asyncio.gather(self._webhook_loop(),
                             background_checks(self.config, self.stop, self.shapes))

    async def _webhook_loop(self) -> None:
        """Webhook events queued on the hub: applied to their mapped tables."""
        if not self.config.raw.get("webhooks", {}).get("sources"):
            await self.stop.wait()
            return
        from syncbridge.engine.webhook_apply import drain_webhook_events, prune_webhook_events

        hub = self.pools[self.config.hub]
        ev = self.events["webhook"]
        last_prune = 0.0
        while not self.stop.is_set():
            self.ticks["webhooks"] = time.monotonic()
            ev.clear()
            n = await self._retrying("webhooks", lambda: drain_webhook_events(
                hub, self.pools, self.config))
            if n:
                continue
            if time.monotonic() - last_prune > 3600:
                await self._retrying("webhooks", lambda: prune_webhook_events(hub, self.config))
                last_prune = time.monotonic()
            await _wait_any([ev], self.stop, self.config.setting("fallback_poll"))

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self.ticks and all(now - t < WATCHDOG_STALE for t in self.ticks.values()):
                sdnotify.notify("WATCHDOG=1")


async def _wait_any(events: list[asyncio.Event], stop: asyncio.Event, timeout: float) -> None:
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

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(s)


def run(config: Config) -> int:
    asyncio.run(Bridge(config).run())
    return 0
