"""Reconciliation in the bridge: scheduled checks, auto repair, resync requests.

Per link in the config (`Link.check_every`, `Link.repair`):

    check_every = "1h"      # run `check` on this link every hour (s, m, h, d)
    repair = "auto"         # after a check that found differences, run `repair`

`sync.resync('link')` on the hub asks for a full backfill; this loop starts
it. The bridge's daemon runs `background_checks` as one of its extra loops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import asyncpg

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config, ConfigError, seconds
from syncbridge.engine.reconcile import backfill, check, repair
from syncbridge.engine.validate import shapes

SQL = sqlfiles.Queries("queries/reconcile.sql")

log = logging.getLogger("syncbridge.reconcile")

TICK = 5.0  # seconds between looks for resync requests when no bridge heartbeat wakes us
__all__ = ["background_checks", "schedules", "seconds"]


def schedules(config: Config) -> dict[str, tuple[float, bool]]:
    """{link: (check_every seconds, auto repair)} for links that ask for checks."""
    return {name: (link.check_every, link.repair == "auto")
            for name, link in config.links.items() if link.check_every is not None}


async def background_checks(config: Config, stop_event: asyncio.Event,
                            link_shapes: dict | None = None,
                            wake: asyncio.Event | None = None) -> None:
    """Run due checks (and auto repairs) and requested resyncs until stop_event is set.

    Quiet while idle: it sleeps until the next check is due, and looks for
    sync.resync() requests when `wake` is set (the bridge's heartbeat sees them);
    without `wake` it looks every TICK. A failed round is logged and retried next
    tick: reconciliation must never stop the bridge from syncing.
    """
    plan = schedules(config)
    if link_shapes is None:  # the bridge passes the shapes it validated at start
        link_shapes = await asyncio.to_thread(shapes, config)
    stop_flag = threading.Event()
    look = True  # resync requests left by an earlier run: look once at the start
    try:
        while not stop_event.is_set():
            wait = TICK
            try:
                wait = await _round(config, plan, link_shapes, stop_flag, look)
            except Exception as e:  # noqa: BLE001 - logged; the next tick retries
                log.warning("event=reconcile_failed error=%s: %s", type(e).__name__, e)
            if wake is None:
                wait = min(wait, TICK)
            waits = [stop_event.wait()] + ([wake.wait()] if wake is not None else [])
            tasks = [asyncio.ensure_future(w) for w in waits]
            try:
                await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
            look = wake is None or wake.is_set()
            if wake is not None:
                wake.clear()
    finally:
        stop_flag.set()


async def _round(config: Config, plan: dict[str, tuple[float, bool]], link_shapes: dict,
                 stop: threading.Event, look: bool) -> float:
    """Due checks, then (if `look`) resync requests; seconds until the next check is due."""
    if not plan and not look:
        return float("inf")
    hub = await asyncpg.connect(config.hub_peer.dsn, timeout=10)
    due, next_in = [], float("inf")
    try:
        for name, (every, auto) in plan.items():
            last = await hub.fetchval(SQL["last_check_time"], name)
            left = every - (time.time() - last.timestamp()) if last is not None else 0.0
            if left <= 0:
                due.append((name, auto))
                left = every
            next_in = min(next_in, left)
        requests = await hub.fetch(SQL["resync_requests"]) if look else []
    finally:
        await hub.close()
    for name, auto in due:
        await _check_and_repair(config, link_shapes[name], auto)
    for req_id, link, side in requests:
        if link in link_shapes:
            await _resync(config, link_shapes[link], side, req_id, stop)
    return next_in


async def _check_and_repair(config: Config, shape: Any, auto: bool) -> None:
    name = shape.link.name
    [res] = await check.check_all(config, {name: shape}, [])
    # drift is a WARNING (the README's filter shows it); equal is routine
    log.log(logging.WARNING if res.verdict != "equal" else logging.INFO,
            "event=check link=%s verdict=%s run=%s", name, res.verdict, res.run_id)
    if auto and res.verdict == "different":
        try:
            done = await asyncio.to_thread(repair.repair, config, name)
            log.info("event=repair link=%s signalled=%d", name, done.signalled)
        except ConfigError as e:
            log.warning("event=repair_refused link=%s reason=%s", name, e)


async def _resync(config: Config, shape: Any, side: str, req_id: str,
                  stop: threading.Event) -> None:
    try:
        side = backfill.source_side(config, shape.link.name, side)
    except ConfigError:  # sync.resync() defaults to side a: use the link's source instead
        side = backfill.source_side(config, shape.link.name, None)
    log.info("event=resync link=%s side=%s", shape.link.name, side)
    run = await asyncio.to_thread(backfill.backfill, config, shape, side, request_id=req_id,
                                  progress=False, stop=stop)
    log.info("event=resync_done link=%s signalled=%d status=%s", shape.link.name,
             run.signalled, run.status)
