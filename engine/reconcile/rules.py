"""`[[rules]]` of the config: SQL that returns violating rows, run read-only by `check`."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config, ConfigError
from syncbridge.engine.reconcile.results import Diff, Result

SQL = sqlfiles.Queries("queries/reconcile.sql")


def rules(config: Config) -> dict[str, dict[str, Any]]:
    """[[rules]] of the config by name: name, peer, sql (returns violating rows)."""
    out: dict[str, dict[str, Any]] = {}
    for body in config.rules:
        name, peer, text = body.name, body.peer, body.sql
        if not name or not text.strip():
            raise ConfigError(f"rule {name!r}: every [[rules]] entry needs name and sql")
        peer = peer or config.hub
        if peer not in config.peers or config.peers[peer].dialect != "postgres":
            raise ConfigError(f"rule {name!r}: peer {peer!r} is not a postgres peer")
        if name in out:
            raise ConfigError(f"rule {name!r} is defined twice")
        out[name] = {"name": name, "peer": peer, "sql": str(text).strip().rstrip(";")}
    return out


async def run_rule(rule: dict[str, Any], pool: asyncpg.Pool) -> Result:
    """Run a rule's query read-only; each returned row is a violation."""
    res = Result("rule", rule["name"])
    started = time.monotonic()
    # the rule is SQL by design (the operator's config), spliced as is
    stmt = SQL.render("rule_rows", rule=sql.SQL(rule["sql"]))
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        rows = await conn.fetch(stmt)
    res.diffs = [Diff("violation", None, None, detail=json.loads(r["row"])) for r in rows]
    res.verdict = "violated" if rows else "ok"
    res.seconds = time.monotonic() - started
    return res
