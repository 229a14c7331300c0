"""The bridge's wake-ups: LISTEN on every source peer, kept healthy without polling.

A NOTIFY from a capture trigger wakes the drain loop of its link side; the
hub's control channel (sync.pause / sync.resume / sync.set_rate) wakes the
control loop. The connection is watched by asyncpg's termination listener and
TCP keepalives, so an idle bridge sends no statement to find out it is alive;
on any loss it reconnects with backoff and wakes every loop (catching up on
what was sent meanwhile). `Listening` is a part of bridge.daemon.Bridge.

A writer notifies only while the bridge holds the side's wake lock on this
connection (engine/postgres/capture.py wake_lock): the drain loop takes it
(`_arm`) before it sleeps and lets go of it (`_disarm`) while rows flow faster
than wake-ups are worth, since every notifying commit holds a database-wide lock
through its WAL flush. A writer that did not notify keeps the lock shared to its
commit, so `_arm` waits for it (ARM_WAIT at most, then the loop polls); the lock
dies with the connection, and a new connection wakes every loop to arm again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import asyncpg

from syncbridge.engine import errors
from syncbridge.engine.config import Config
from syncbridge.engine.hub import lease
from syncbridge.engine.postgres import capture

from .waits import backoff, retryable, wait_any

log = logging.getLogger("syncbridge.bridge")

LISTEN_PING = 300.0  # seconds between pings of a LISTEN connection; TCP keepalives and
# asyncpg's termination listener see its loss long before (an idle bridge stays quiet)
KEEPALIVE = (10, 5, 3)  # TCP keepalive idle s, interval s, probes: a dead path in ~25 s
# how long _arm waits for writers that hold a wake lock shared (each, till its commit): a
# try alone was starved by a steady stream of writers, each taking it while it was free
ARM_WAIT = "200ms"
SERVER_KEEPALIVE = dict(zip(("tcp_keepalives_idle", "tcp_keepalives_interval",
                             "tcp_keepalives_count"), map(str, KEEPALIVE), strict=True))
CONTROL_CHANNEL = "syncbridge_control"  # sync.pause / sync.resume notify it
ALIVE = lease.SQL["alive"]


def _keepalive(conn: asyncpg.Connection) -> None:
    """TCP keepalives on a LISTEN connection: a silently dead path (a firewall that
    drops idle flows, a host gone) ends the connection, so no wake-up is missed
    without a statement on the wire. asyncpg exposes no option for it; the socket is
    its transport's."""
    sock = conn._transport.get_extra_info("socket")  # noqa: SLF001 - no public route
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket (host=/run/postgresql) has no TCP keepalive: EOPNOTSUPP
    idle, interval, count = KEEPALIVE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                        ("TCP_KEEPCNT", count)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class Listening:
    """LISTEN per source peer; the events it sets are the drain and control loops'."""

    config: Config
    events: dict[str, asyncio.Event]
    control: asyncio.Event
    quiet: set[tuple[str, str]]
    ticks: dict[str, float]
    tick_every: dict[str, float]
    halt: asyncio.Event

    armed: dict[tuple[str, str], str]  # (link, source side): its wake lock is held on this peer
    listen_conns: dict[str, tuple[asyncpg.Connection, asyncio.Lock]]  # peer: LISTEN session
    let_go: set[tuple[str, str]]  # wake locks let go on purpose while rows flow
    orphans: dict[str, int]  # peer: backend pid of the LISTEN session last lost there
    wakes: dict[tuple[str, str], tuple[float, int, int]]  # NOTIFYs: window start, this, last

    def _waking(self, key: tuple[str, str], wakes: int = 0) -> bool:
        raise NotImplementedError

    def _wake_all(self) -> None:
        raise NotImplementedError

    async def _nap(self, seconds: float) -> None:
        raise NotImplementedError

    async def _listen(self, peer: str) -> None:
        """LISTEN as a wake-up; on any failure reconnect with backoff and wake everyone.

        A terminated backend is seen at once (asyncpg's termination listener), not
        at the next ping; the ping catches a connection that silently stalls."""
        failures = 0
        while not self.halt.is_set():
            conn = None
            lost = asyncio.Event()
            try:
                conn = await self._listen_connect(peer, lost)
                # read now: a connection terminated elsewhere (_arm, _disarm) has no pid
                backend = conn.get_server_pid()
                self.listen_conns[peer] = (conn, asyncio.Lock())
                if failures:
                    log.info("event=listen_restored peer=%s", peer)
                failures = 0
                self._wake_all()  # catch up on anything sent while we were not listening
                self.tick_every[f"listen:{peer}"] = LISTEN_PING
                while not self.halt.is_set():
                    self.ticks[f"listen:{peer}"] = time.monotonic()
                    await wait_any([lost], self.halt, LISTEN_PING)
                    if lost.is_set():
                        raise ConnectionError("LISTEN connection lost")
                    async with self.listen_conns[peer][1]:
                        await conn.fetchval(ALIVE, timeout=5)
            except Exception as e:
                if not retryable(e):
                    raise
                failures += 1
                log.warning("event=listen_lost peer=%s error=%s", peer, errors.describe(e))
                self.ticks[f"listen:{peer}"] = time.monotonic()
                if conn is not None:  # its loops poll while it is away, not after
                    self._forget_locks(peer, conn)
                await self._nap(backoff(failures))
            finally:
                if conn is not None:
                    self._forget_locks(peer, conn)
                    self.orphans[peer] = backend
                    conn.terminate()

    def _forget_locks(self, peer: str, conn: asyncpg.Connection) -> None:
        """The wake locks of a LISTEN session that ends end with it: their loops are woken
        to poll until a new session arms them (no writer notifies, nobody would hear it),
        and sync.status no longer hears from this bridge that they are quiet."""
        if self.listen_conns.get(peer, (None,))[0] is conn:
            del self.listen_conns[peer]
        for key in [k for k, p in self.armed.items() if p == peer]:
            del self.armed[key]
            self.quiet.discard(key)
            ev = self.events.get(f"{key[0]}:{key[1]}")
            if ev is not None:
                ev.set()

    async def _arm(self, key: tuple[str, str], peer: str) -> bool:
        """Hold the wake lock of (link, source side) so its writers notify; False while a
        writer that did not notify stays open past ARM_WAIT, or with no LISTEN session
        (poll meanwhile)."""
        if key in self.armed:
            return True
        session = self.listen_conns.get(peer)
        if session is None:
            return False
        conn, busy = session
        try:
            async with busy:
                await conn.execute(capture.SQL["arm"], *capture.wake_lock(*key), timeout=5)
        except asyncpg.LockNotAvailableError:  # ARM_WAIT passed: a writer is still open
            log.debug("event=wake_lock link=%s side=%s taken=false", key[0], key[1])
            return False
        except Exception as e:
            if not retryable(e):
                raise
            conn.terminate()  # the lock may be granted, or held twice: a new session
            return False
        log.debug("event=wake_lock link=%s side=%s taken=true", key[0], key[1])
        if self.listen_conns.get(peer) is session:
            self.armed[key] = peer
        return key in self.armed

    async def _disarm(self, key: tuple[str, str]) -> None:
        """Let go of a wake lock: writers stop notifying while the loop drains anyway. A
        failed unlock leaves it held, which only keeps the writers notifying."""
        peer = self.armed.pop(key, None)
        if peer is None:
            return
        log.debug("event=wake_lock link=%s side=%s let_go=true", key[0], key[1])
        session = self.listen_conns.get(peer)
        if session is None:
            return
        conn, busy = session
        try:
            async with busy:
                await conn.fetchval(capture.SQL["disarm"], *capture.wake_lock(*key), timeout=5)
        except Exception as e:
            if not retryable(e):
                raise
            conn.terminate()  # a lock still held would keep the next _arm counting twice

    async def _listen_connect(self, peer: str, lost: asyncio.Event) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.config.peers[peer].dsn, timeout=10,
                                     server_settings={"application_name": "syncbridge-listen",
                                                      "lock_timeout": ARM_WAIT,
                                                      **SERVER_KEEPALIVE})
        _keepalive(conn)
        orphan = self.orphans.pop(peer, None)
        if orphan is not None:  # a path reset on our side only leaves the old backend,
            # and its wake locks, until the server's keepalives end it
            await conn.fetchval(capture.SQL["end_listen_orphan"], orphan, timeout=5)
        conn.add_termination_listener(lambda _c: lost.set())
        await conn.add_listener(capture.NOTIFY_CHANNEL, self._on_notify)
        if peer == self.config.hub:
            await conn.add_listener(CONTROL_CHANNEL, self._on_control)
        return conn

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        ev = self.events.get(payload)
        if ev is not None:
            link, _, side = payload.rpartition(":")
            self.quiet.discard((link, side))
            self._waking((link, side), 1)
            ev.set()

    def _on_control(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self.control.set()

    # -- retries -----------------------------------------------------------------
