"""Leadership: one active bridge per configuration, the others hot standbys.

The lock is a session-level advisory lock on the hub, so a dead bridge's lock
goes with its connection; a holder that stops beating (SIGSTOP, a hung loop)
but keeps its session is fenced by a standby (its backend terminated)."""

from __future__ import annotations

import json
import logging
import os
import socket

import asyncpg

from syncbridge.engine import sqlfiles
from syncbridge.engine.hub.report import Controls

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

    async def try_take(self, key: str | None = None) -> bool:
        """Take the lock `key` (this lease's own by default) if it is free."""
        return bool(await self.conn.fetchval(SQL["try_lock"], key or self.key))

    async def release(self, key: str) -> None:
        """Let go of a lock this session took (a standby that got only some of its keys)."""
        await self.conn.fetchval(SQL["unlock"], key)

    async def beat(self, role: str, quiet: list[tuple[str, str]] | None = None
                   ) -> tuple[Controls, bool]:
        """One heartbeat: alive, the quiet directions' samples kept fresh (the bridge
        vouches that nothing is queued there); returns the held links and rate limits
        (report.Controls) and whether dead-letter retries or conflict resolutions wait
        (sync.retry_dead, sync.resolve_conflict). It is also the check that the lock's
        session answers."""
        rows = await self.conn.fetch(
            SQL["heartbeat"], self.instance, socket.gethostname(), os.getpid(), role, self.hb,
            json.dumps([{"link": link, "side": side} for link, side in quiet or []]),
            timeout=self.hb)
        return Controls.from_rows(rows), any(r["link"] is None for r in rows)

    async def publish_link_options(self, hours: dict[str, str | None]) -> None:
        """At the start of a term: each link's active_hours, with the zone they are read
        in. On this session, not a pool's: its TimeZone is the server's own setting
        (the pools pin UTC as a startup parameter, which is also their reset value)."""
        await self.conn.execute(SQL["publish_link_options"], json.dumps(
            [{"link": link, "hours": h} for link, h in sorted(hours.items())]))

    async def fence_stale(self) -> None:
        """End the session of a lock holder that missed two heartbeats."""
        for r in await self.conn.fetch(SQL["stale_leader"], self.key, self.hb):
            log.warning("event=stale_leader_fenced backend_pid=%s", r["pid"])
            await self.conn.execute(SQL["fence_stale"], r["pid"])

    async def forget(self) -> None:
        """A clean stop: gone from sync.bridges at once."""
        await self.conn.execute(SQL["forget_bridge"], self.instance, timeout=2)
