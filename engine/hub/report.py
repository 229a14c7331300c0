"""What the bridge tells the hub, so `select * from sync.status` can be trusted.

Every figure is written by the loop that knows it: depth samples by the stats
loop (with the thresholds sync.status judges staleness by), batch counts and
retries by the drain that did them, errors by the retry loop (cleared by the
first success after them), canaries end to end. Link control (pause/resume,
active_hours, rate limits: sync.link_holds) is read from here too."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from syncbridge.engine import errors, sqlfiles
from syncbridge.engine.contract import Drain

SQL = sqlfiles.Queries("hub/status.sql")
log = logging.getLogger("syncbridge.report")
TALLY_EVERY = 0.25  # seconds: a direction's batch counts reach the hub at most this often


async def depth(hub: asyncpg.Pool, drain: Drain, hub_peer: str, stall: float,
                stale: float) -> int:
    """Sample one direction's queue (returns what is queued); a queue in the hub
    itself is counted live by sync.status (never from a sample that may be stale)."""
    queued, oldest = await drain.depth()
    await hub.execute(SQL["report_depth"], drain.link.name, drain.src, queued, oldest,
                      drain.queue_peer == hub_peer, stall, stale)
    return int(queued)


async def error(hub: asyncpg.Pool, drain: Drain, text: str, kind: str | None,
                timeout: float) -> None:
    """The failure sync.status shows (kind: 'sink'/'source' unreachable, else None)."""
    await hub.execute(SQL["report_error"], drain.link.name, drain.src, text[:2000], kind,
                      timeout=timeout)


async def recovered(hub: asyncpg.Pool, drain: Drain, timeout: float) -> Any:
    """Clear the error; the row is returned only if there was one to clear."""
    return await hub.fetchrow(SQL["report_recovered"], drain.link.name, drain.src,
                              timeout=timeout)


async def batch(hub: asyncpg.Pool, link: str, side: str, rows: int, deferred: int,
                batches: int = 1) -> None:
    """Finished batches: their row count; each deferred row counts as one retry."""
    await hub.execute(SQL["report_batch"], link, side, rows, batches)
    if deferred:
        await hub.execute(SQL["report_retries"], link, side, deferred)


class Tally:
    """Batch counts of one direction written off the batch's path: `add` returns at
    once, and one write at a time takes everything added since the last, at most one
    every TALLY_EVERY seconds, so a busy direction sends the hub a few statements a
    second, not one per batch (a hub commit per small batch cost the bridge as much
    CPU as one more round trip of the batch), and the next batch does not wait for
    the hub's commit. A failed write keeps its counts for the next one (logged);
    counts still unwritten when the process dies are lost (the sinks' applied-batch
    records keep the truth)."""

    def __init__(self, hub: asyncpg.Pool, link: str, side: str) -> None:
        self.hub, self.link, self.side = hub, link, side
        self.rows = self.deferred = self.batches = 0
        self.task: asyncio.Task | None = None
        self.written = -TALLY_EVERY  # monotonic time of the last write's start

    def add(self, rows: int, deferred: int) -> None:
        self.rows, self.deferred, self.batches = (self.rows + rows, self.deferred + deferred,
                                                  self.batches + 1)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._write())

    async def flush(self) -> None:
        """Wait for the write in flight (the term ends: before the pools close)."""
        if self.task is not None:
            await asyncio.shield(self.task)

    async def _write(self) -> None:
        while self.batches:
            wait = self.written + TALLY_EVERY - time.monotonic()
            if wait > 0:  # batches added meanwhile are written together
                await asyncio.sleep(wait)
            self.written = time.monotonic()
            rows, deferred, batches = self.rows, self.deferred, self.batches
            self.rows = self.deferred = self.batches = 0
            try:
                await batch(self.hub, self.link, self.side, rows, deferred, batches)
            except errors.DATABASE_ERRORS as e:
                self.rows, self.deferred, self.batches = (self.rows + rows,
                                                          self.deferred + deferred,
                                                          self.batches + batches)
                log.warning("event=report_failed link=%s side=%s batches=%d error=%s",
                            self.link, self.side, self.batches, errors.describe(e))
                return


async def canary_arrived(hub: asyncpg.Pool, link: str, side: str, sent_at: Any,
                         applied_at: Any) -> None:
    await hub.execute(SQL["report_canary"], link, side, sent_at, applied_at)


async def send_canaries(hub: asyncpg.Pool, drains: list[Drain], paused: dict[str, str]
                        ) -> list[Drain]:
    """One canary per direction that has one and whose last canary has arrived;
    returns the drains to wake."""
    pending = {(r["link"], r["source_side"]) for r in await hub.fetch(SQL["pending_canaries"])}
    sent = []
    for d in drains:
        if d.link.name in paused or (d.link.name, d.src) in pending:
            continue
        at = await d.send_canary()
        if at is None:
            continue
        await hub.execute(SQL["canary_sent"], d.link.name, d.src, at)
        sent.append(d)
    return sent


@dataclass(frozen=True)
class Controls:
    """What sync.link_holds says the bridge must do: the held links {link: reason}
    (paused, or outside active_hours) and the rate limits {link: rows per second}."""

    paused: dict[str, str] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: list[Any]) -> Controls:
        """Rows of (link, held_reason, rate_limit); a row with no link is not a link's."""
        return cls({r[0]: r[1] for r in rows if r[0] is not None and r[1] is not None},
                   {r[0]: float(r[2]) for r in rows if r[0] is not None and r[2] is not None})


async def link_controls(hub: asyncpg.Pool, timeout: float) -> Controls:
    """The held links and rate limits (the heartbeat returns the same)."""
    return Controls.from_rows(await hub.fetch(SQL["link_controls"], timeout=timeout))


async def pause(hub: asyncpg.Pool, link: str, reason: str) -> None:
    await hub.execute(SQL["pause_link"], link, reason)


async def status_rows(hub: asyncpg.Pool) -> list[Any]:
    return await hub.fetch(SQL["status_rows"])
