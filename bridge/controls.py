"""What the operator and the config say about a link: hold it, or slow it down.

A link is held while sync.link_holds says so: an operator's `sync.pause`
(`syncbridge pause`), a schema change, or a time outside the link's
`active_hours` (published here at the start of a term, read in the hub
server's TimeZone). A rate limit (`sync.set_rate`, `syncbridge set-rate`)
caps each claim at RATE_SLICE seconds' worth of rows and spaces the link's
batches by rows applied / rate. The heartbeat returns the same view (no
statement of its own while idle); sync.pause / resume / set_rate also NOTIFY
so a change is taken at once. `LinkControls` is a part of bridge.daemon.Bridge.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import asyncpg

from syncbridge.engine import errors
from syncbridge.engine.config import Config
from syncbridge.engine.contract import Drain
from syncbridge.engine.hub import report
from syncbridge.engine.hub.lease import Lease
from syncbridge.engine.postgres.drain import QueueDrain

from .waits import retryable, wait_any

log = logging.getLogger("syncbridge.bridge")

RATE_SLICE = 0.25  # seconds of a link's rate one batch may carry: an even flow, not bursts


class LinkControls:
    """Pause, active_hours and rate limits of the links of one term."""

    config: Config
    pools: dict[str, asyncpg.Pool]
    events: dict[str, asyncio.Event]
    control: asyncio.Event
    paused: dict[str, str]
    rates: dict[str, float]
    ticks: dict[str, float]
    halt: asyncio.Event
    hb: float
    lease: Lease | None

    async def _nap(self, seconds: float) -> None:
        raise NotImplementedError

    async def _publish_link_options(self) -> None:
        """The links' active_hours as this config has them, on the leader's session."""
        if self.lease is not None:
            await self.lease.publish_link_options(
                {name: link.active_hours for name, link in self.config.links.items()})

    async def _read_control(self) -> None:
        """Take sync.link_holds' held links and rate limits as this bridge's."""
        self._set_controls(await report.link_controls(self.pools[self.config.hub], self.hb))

    def _set_controls(self, controls: report.Controls) -> None:
        """The held links and rates as the hub has them (read on NOTIFY and every beat)."""
        paused = controls.paused
        for link in paused.keys() - self.paused.keys():
            log.info("event=paused link=%s reason=%s", link, paused[link])
        for link in self.paused.keys() - paused.keys():
            log.info("event=resumed link=%s", link)
            self._wake_link(link)
        for link in controls.rates.keys() | self.rates.keys():
            if controls.rates.get(link) != self.rates.get(link):
                log.info("event=rate_limit link=%s rows_per_second=%s", link,
                         controls.rates.get(link, "unlimited"))
                self._wake_link(link)
        self.paused, self.rates = paused, controls.rates

    def _wake_link(self, link: str) -> None:
        for key, ev in self.events.items():
            if key.startswith(f"{link}:"):
                ev.set()

    async def _control_loop(self) -> None:
        """Follow sync.link_holds: a held link is not drained (its signals queue).

        Woken by sync.pause/resume/set_rate's NOTIFY (and a LISTEN reconnect); the
        heartbeat reads the same, so a missed notify (or the start of an active_hours
        window) costs one interval, not a poll."""
        while not self.halt.is_set():
            self.ticks["control"] = time.monotonic()
            self.control.clear()
            try:
                await self._read_control()
            except Exception as e:
                if not retryable(e):
                    raise
                log.warning("event=control_failed error=%s", errors.describe(e))
            self.ticks.pop("control", None)  # waiting for a NOTIFY is not being stuck
            await wait_any([self.control], self.halt, None)

    def _limit_claims(self, link: str, drains: list[Drain]) -> None:
        """Under a rate limit a batch carries at most RATE_SLICE seconds of it (Postgres
        queues; a SQL Server source's batches are not capped, its pace still holds)."""
        rate = self.rates.get(link)
        limit = max(1, math.ceil(rate * RATE_SLICE)) if rate else None
        for d in drains:
            if isinstance(d, QueueDrain):
                d.claim_limit = limit

    async def _pace(self, link: str, rows: int, started: float) -> None:
        """Hold a rate-limited link to its rate: the round that applied `rows` lasts
        at least rows / rate seconds from `started` (monotonic)."""
        rate = self.rates.get(link)
        if not rate:
            return
        delay = rows / rate - (time.monotonic() - started)
        if delay > 0:
            self.ticks[f"drain:{link}"] = time.monotonic()  # slowed on purpose, not hung
            await self._nap(delay)
