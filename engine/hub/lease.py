"""Leadership: one active bridge per configuration, the others hot standbys.

The lock is a session-level advisory lock on the hub, so a dead bridge's lock
goes with its connection; a holder that stops beating (SIGSTOP, a hung loop)
but keeps its session is fenced by a standby (its backend terminated)."""

from __future__ import annotations

import logging
import os
import socket

import asyncpg

from syncbridge.engine import sqlfiles

SQL = sqlfiles.Queries("hub/lease.sql")
log = logging.getLogger("syncbridge.bridge")


def lock_key(links: list[str]) -> str:
    """The advisory lock's name: one per set of links (one configuration)."""
    return "syncbridge:" + ",".join(sorted(links))


class Lease:
    """The hub session holding (or waiting for) the lock, and this bridge's heartbeat."""

    def __init__(self, conn: asyncpg.Connection, instance: str, key: str,
                 heartbeat: float) -> None:
        self.conn, self.instance, self.key, self.hb = conn, instance, key, heartbeat

    async def try_take(self) -> bool:
        return bool(await self.conn.fetchval(SQL["try_lock"], self.key))

    async def beat(self, role: str) -> None:
        await self.conn.execute(SQL["heartbeat"], self.instance, socket.gethostname(),
                                os.getpid(), role, self.hb, timeout=self.hb)

    async def confirm(self, role: str) -> None:
        """The session still answers (so the lock is still ours), then a heartbeat."""
        await self.conn.fetchval(SQL["alive"], timeout=self.hb)
        await self.beat(role)

    async def fence_stale(self) -> None:
        """End the session of a lock holder that missed two heartbeats."""
        for r in await self.conn.fetch(SQL["stale_leader"], self.key, self.hb):
            log.warning("event=stale_leader_fenced backend_pid=%s", r["pid"])
            await self.conn.execute(SQL["fence_stale"], r["pid"])

    async def prune_bridges(self) -> None:
        await self.conn.execute(SQL["prune_bridges"], timeout=self.hb)

    async def forget(self) -> None:
        """A clean stop: gone from sync.bridges at once."""
        await self.conn.execute(SQL["forget_bridge"], self.instance, timeout=2)
