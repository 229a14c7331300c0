"""Retention ([bridge] *_days): Postgres sinks' applied batches, the hub's logs."""

from __future__ import annotations

import logging

import asyncpg

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config

SQL = sqlfiles.Queries("hub/prune.sql")
QUEUE = sqlfiles.Queries("postgres/queue.sql")
log = logging.getLogger("syncbridge.bridge")

HUB_TABLES = (("prune_check_runs", "check_runs_days"),
              ("prune_conflicts", "resolved_conflicts_days"))


async def prune(config: Config, hub: asyncpg.Pool, sinks: dict[str, asyncpg.Pool]) -> None:
    """One retention pass; sinks are the Postgres peers some drain writes."""
    days = float(config.setting("applied_batches_days"))
    for peer, pool in sorted(sinks.items()):
        status = await pool.execute(QUEUE["prune_applied"], days)
        log.info("event=pruned table=applied_batches peer=%s rows=%s", peer, status.split()[-1])
    await hub.execute(SQL["prune_apply_log"])
    for name, setting in HUB_TABLES:
        status = await hub.execute(SQL[name], float(config.setting(setting)))
        log.info("event=pruned table=%s rows=%s", name.removeprefix("prune_"),
                 status.split()[-1])
