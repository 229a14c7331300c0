"""Leases on the hub: the coordinator's lock, one lock per link, heartbeats.

Every lock is a session-level advisory lock on the hub, so a dead bridge's
locks go with its connection (a SIGKILLed bridge's links are free at once); a
holder that stops beating (SIGSTOP, a hung loop) but keeps its session is
fenced by a bridge that wants one of its locks (its backend terminated).

The lock of the configuration's link set (`lock_key`) makes its holder the
coordinator (the hub-wide jobs); the lock of a link (`link_key`) lets its
holder drain that link. The heartbeat is the one statement that also says which
wanted locks are free and how many bridges run the same link set (`Beat`), so
sharing links costs an idle bridge no statement of its own."""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass

import asyncpg

from syncbridge.engine import sqlfiles
from syncbridge.engine.hub.report import Controls

SQL = sqlfiles.Queries("hub/lease.sql")
log = logging.getLogger("syncbridge.bridge")


def lock_key(links: list[str]) -> str:
    """The coordinator lock's name: one per set of links (one configuration)."""
    return "syncbridge:" + ",".join(sorted(links))


def link_key(link: str) -> str:
    """The lock a bridge holds while it drains `link` (at most one bridge at a time)."""
    return "syncbridge-link:" + link


@dataclass
class Beat:
    """What one heartbeat returned."""

    controls: Controls  # held links and rate limits
    upkeep: bool  # dead-letter retries, conflict resolutions or a resync wait
    free: set[str]  # the wanted locks nobody holds
    stale: list[int]  # hub backends holding a wanted lock for a bridge that stopped beating
    live: int  # bridges of this link set whose lock session is alive, this one included
    least: int | None  # the fewest links another of them holds (None: no other)


class Lease:
    """The hub session holding (or waiting for) the locks, and this bridge's heartbeat."""

    def __init__(self, conn: asyncpg.Connection, instance: str, key: str,
                 heartbeat: float) -> None:
        self.conn, self.instance, self.key, self.hb = conn, instance, key, heartbeat
        self.link_set = key  # lock_key of the links the bridge runs now (sync.bridges)

    async def try_take(self, key: str | None = None) -> bool:
        """Take the lock `key` (this lease's own by default) if it is free."""
        return bool(await self.conn.fetchval(SQL["try_lock"], key or self.key))

    async def release(self, key: str) -> None:
        """Let go of a lock this session took (a standby that got only some of its keys,
        a link given back)."""
        await self.conn.fetchval(SQL["unlock"], key)

    async def beat(self, role: str, quiet: list[tuple[str, str]] | None = None,
                   links: list[str] | None = None, wanted: list[str] | None = None
                   ) -> Beat:
        """One heartbeat: alive (with the links held), the quiet directions' samples
        kept fresh (the bridge vouches that nothing is queued there); returns a Beat:
        the held links and rate limits, whether upkeep waits, which of the `wanted`
        locks are free or held for a stopped bridge, and the live bridges of this
        link set. It is also the check that the locks' session answers."""
        rows = await self.conn.fetch(
            SQL["heartbeat"], self.instance, socket.gethostname(), os.getpid(), role, self.hb,
            json.dumps([{"link": link, "side": side} for link, side in quiet or []]),
            self.link_set, sorted(links or []), sorted(wanted or []), timeout=self.hb)
        kinds: dict[str, list] = {}
        for r in rows:
            kinds.setdefault(r["kind"], []).append(r)
        return Beat(Controls.from_rows([(r["link"], r["held_reason"], r["rate_limit"])
                                        for r in kinds.get("hold", [])]),
                    "upkeep" in kinds, {r["link"] for r in kinds.get("free", [])},
                    [r["n"] for r in kinds.get("stale", [])],
                    max([1, *(r["n"] for r in kinds.get("live", []))]),
                    min((r["n"] for r in kinds.get("least", [])), default=None))

    async def publish_link_options(self, hours: dict[str, str | None]) -> None:
        """At the start of a term: each link's active_hours, with the zone they are read
        in. On this session, not a pool's: its TimeZone is the server's own setting
        (the pools pin UTC as a startup parameter, which is also their reset value)."""
        await self.conn.execute(SQL["publish_link_options"], json.dumps(
            [{"link": link, "hours": h} for link, h in sorted(hours.items())]))

    async def fence(self, pids: list[int]) -> None:
        """End the hub sessions of lock holders that missed two heartbeats (Beat.stale)."""
        for pid in pids:
            log.warning("event=stale_leader_fenced backend_pid=%s", pid)
            await self.conn.execute(SQL["fence_stale"], pid)

    async def forget(self) -> None:
        """A clean stop: gone from sync.bridges at once."""
        await self.conn.execute(SQL["forget_bridge"], self.instance, timeout=2)
