"""Waiting and retrying primitives shared by the bridge's loops."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from syncbridge.engine import errors

RETRY_MAX = 1.0  # seconds; full-jitter backoff ceiling: flowing <= ~1 s after a fault heals

# what a best-effort write to the hub may fail with (the log has the cause already)
HUB_ERRORS = errors.DATABASE_ERRORS  # a hub that is down or gone


def retryable(exc: BaseException) -> bool:
    """A fault worth retrying (connection, timeout, any database error) rather than a bug."""
    return errors.is_transient(exc) or isinstance(exc, asyncpg.PostgresError)


def backoff(failures: int) -> float:
    """Full jitter: uniform in [0, min(RETRY_MAX, 0.1 s * 2^n)]."""
    return random.uniform(0, min(RETRY_MAX, 0.1 * 2 ** failures))


async def wait_any(events: list[asyncio.Event], stop: asyncio.Event,
                   timeout: float | None) -> None:
    """Until any event (or stop) is set, or the timeout passes."""
    waits = [asyncio.ensure_future(e.wait()) for e in [*events, stop]]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
