"""A dead letter's life, in one place.

1. written: a row the sink rejects (or a parent still missing after
   max_attempts deferrals) is stored in the hub's sync.dead_letter by its
   key and error (the row itself stays at the source; logs carry no values);
2. closed: when a later batch applies the same key, its open dead letters
   are closed (drains call `close` only while their side has open ones);
3. retried: an operator calls sync.retry_dead(); the bridge turns each
   request into a fresh signal at the source (`retry_requested`), so the key
   travels again through the normal pipeline.
The table and sync.retry_dead() are defined in migrations/postgres/."""

from __future__ import annotations

from collections.abc import Callable, Collection

import asyncpg

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config

SQL = sqlfiles.Queries("hub/dead_letters.sql")


async def write(hub: asyncpg.Pool, link: str, side: str, problems: str) -> None:
    """Store a batch's rejected rows (a JSON array of {key, error, defer})."""
    await hub.execute(SQL["dead_letter"], link, side, problems)


async def close(hub: asyncpg.Pool, link: str, side: str, keys: list[str]) -> None:
    """The keys applied: their open dead letters are closed."""
    await hub.execute(SQL["close_dead_letters"], link, side, keys)


async def open_sides(hub: asyncpg.Pool) -> set[tuple[str, str]]:
    """(link, source side) pairs with a dead letter not yet closed."""
    return {(r["link"], r["source_side"]) for r in await hub.fetch(SQL["open_dead_letter_links"])}


async def retry_requested(hub: asyncpg.Pool, config: Config, pools: dict[str, asyncpg.Pool],
                          wake: Callable[[str, str], None],
                          links: Collection[str] | None = None) -> None:
    """Turn sync.retry_dead() requests into fresh signals at their Postgres source
    (`links`: only those of these links, the ones this bridge drains).

    A SQL Server source has no queue: its drain re-reads the key itself."""
    for r in await hub.fetch(SQL["retry_requests"]):
        link = config.links.get(r["link"])
        if link is None or links is not None and r["link"] not in links:
            continue
        source = pools.get(link.side(r["source_side"]).peer)
        if source is None:
            continue
        await source.execute(SQL["requeue_key"], r["link"], r["source_side"], r["key"])
        await hub.execute(SQL["retry_sent"], r["id"])
        wake(r["link"], r["source_side"])
