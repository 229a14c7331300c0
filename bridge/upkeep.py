"""The bridge's upkeep loops: status samples, retries asked for, retention, webhooks.

Every `stats_interval` the stats loop samples queue depths into the hub,
turns sync.retry_dead() requests into signals, enacts resolved conflicts,
sends canaries and prunes — each step is a function of engine/hub/, this
module only schedules them. Samples, canaries, retries and resolutions are
each bridge's for the links it holds; retention, the webhook loop (events the
webhook app queued on the hub) and scheduled checks beside it
(engine/reconcile/schedule.py) are the coordinator's (bridge/sharing.py).
`Upkeep` is a part of bridge.daemon.Bridge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg

from syncbridge.bridge import metrics
from syncbridge.engine import errors
from syncbridge.engine.contract import Drain
from syncbridge.engine.hub import dead_letters, prune, report, resolutions

from .draining import Draining
from .waits import retryable, wait_any

log = logging.getLogger("syncbridge.bridge")


class Upkeep(Draining):
    """The stats and webhook loops of a term (the drains are Draining's)."""

    metrics: metrics.Metrics
    resyncs: asyncio.Event
    mssql: dict[str, Any]
    coordinating: bool  # runs the hub-wide jobs (bridge/sharing.py)

    async def _stats_loop(self) -> None:
        hub = self.pools[self.config.hub]
        every = {"canary": self.config.setting("canary_interval"),
                 "prune": self.config.setting("prune_interval")}
        last = {"canary": float("-inf"), "prune": float("-inf")}

        def due(what: str) -> bool:
            if not every[what] or time.monotonic() - last[what] < every[what]:
                return False
            last[what] = time.monotonic()
            return True

        while not self.halt.is_set():
            self.ticks["stats"] = time.monotonic()
            try:
                busy = await self._sample(hub)
                if self.upkeep.is_set():
                    self.upkeep.clear()
                    await self._upkeep(hub)
                if due("canary"):  # lag of directions carrying traffic; quiet ones send none
                    for d in await report.send_canaries(hub, busy, self.paused):
                        self._wake(d.link.name, d.src)
                if due("prune") and self.coordinating:
                    await prune.prune(self.config, hub, self._postgres_sinks())
                if self.config.setting("metrics"):
                    self.metrics.update(await report.status_rows(hub))
            except Exception as e:
                if not retryable(e):
                    raise
                log.warning("event=stats_failed error=%s", errors.describe(e))
            await self._nap(self.config.setting("stats_interval"))

    async def _sample(self, hub: asyncpg.Pool) -> list[Drain]:
        """Sample the depth of every direction the bridge cannot vouch for (see
        Draining._quiet_directions); returns those directions. Idle: no statement."""
        busy = [d for d in self.drains if not self._vouched((d.link.name, d.src))]
        if not busy:
            return []
        open_sides = await dead_letters.open_sides(hub)
        stall = float(self.config.setting("stall_after"))
        stale = float(self.config.setting("stale_after"))
        for d in busy:
            self.depths[(d.link.name, d.src)] = await report.depth(
                hub, d, self.config.hub, stall, stale)
        for d in self.drains:
            d.open_dead_letters = (d.link.name, d.src) in open_sides
        return busy

    async def _upkeep(self, hub: asyncpg.Pool) -> None:
        """What an operator asked for: dead-letter retries, resolved conflicts."""
        try:
            await dead_letters.retry_requested(hub, self.config, self.pools, self._wake,
                                               self.links)
            held = {name: s for name, s in self.shapes.items() if name in self.links}
            await resolutions.enact(hub, held, self.pools, self.drains, self._wake, self.mssql)
        except BaseException:
            self.upkeep.set()  # not done: again next round
            raise

    def _postgres_sinks(self) -> dict[str, asyncpg.Pool]:
        """The Postgres peers some link writes (their sync.applied_batches is pruned;
        by the coordinator, whichever bridge drains the link)."""
        peers = {link.side(dst).peer for link in self.config.links.values()
                 for _src, dst in link.directions()}
        return {p: self.pools[p] for p in peers if p in self.pools}

    async def _extra_loops(self) -> None:
        """Webhook events, and scheduled checks / resync requests (engine.reconcile)."""
        from syncbridge.engine.reconcile.schedule import background_checks

        await asyncio.gather(self._webhook_loop(),
                             background_checks(self.config, self.halt, self.shapes,
                                               self.resyncs))

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
            await wait_any([ev], self.halt, self.config.setting("fallback_poll"))
