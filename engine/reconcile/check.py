"""`syncbridge check`: are both sides of a link the same, and which keys are not?

Strategy (the rows never leave their databases until a range is small):
1. chunk the key space by every CHUNK_ROWS-th key of side a (keyset, one
   index scan), and for each range compare (row count, sum of 64 bits of
   md5(canonical row text)) computed in both databases, WORKERS ranges at a
   time per side;
2. a range that differs is split again by the keys of its larger side
   (FANOUT parts) until it holds at most LEAF_ROWS rows; then both sides send
   (canonical key, md5) per row and Python finds the keys that are missing or
   different;
3. every candidate key is re-read from both sides by key, and reported only
   when two reads in a row agree and no signal for it is queued or claimed on
   either side: a change in flight (captured but not yet applied) is waited
   for, up to a deadline, instead of being reported. Keys still in flight at
   the deadline give the verdict `in flight` (exit 3), never `equal`; with no
   bridge running nothing will land, so nothing is waited for and the result
   says so.
The verdict and the keys go to sync.check_runs / sync.check_diffs on the hub.
Rules (`[[rules]]` in the config) are SQL that returns violating rows; they
are run and recorded alongside.

Where each part lives: sides.py (per-side statements, bounded reads), ranges.py
(steps 1-2), settle.py (step 3), rules.py, results.py (verdicts, recording,
the printed summary); this module runs them per link and for the whole config.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config
from syncbridge.engine.postgres import session as pg_session
from syncbridge.engine.reconcile.ranges import CHUNK_ROWS, Ranges
from syncbridge.engine.reconcile.results import Diff, Result, exit_code, record, summary
from syncbridge.engine.reconcile.rules import rules, run_rule
from syncbridge.engine.reconcile.settle import NO_BRIDGE_GRACE, SETTLE_SECONDS, Settler
from syncbridge.engine.reconcile.sides import WORKERS, Sides

__all__ = ["CHUNK_ROWS", "SETTLE_SECONDS", "WORKERS", "Diff", "LinkCheck", "Result",
           "check_all", "exit_code", "open_pools", "record", "rules", "run_rule", "summary"]

SQL = sqlfiles.Queries("queries/reconcile.sql")

log = logging.getLogger("syncbridge.check")


class LinkCheck:
    """Compare both sides of one link; pools maps side -> asyncpg pool."""

    def __init__(self, shape: LinkShape, pools: dict[str, asyncpg.Pool],
                 settle: float = SETTLE_SECONDS, chunk_rows: int = CHUNK_ROWS,
                 hub: asyncpg.Pool | None = None) -> None:
        self.link = shape.link
        self.sides = Sides(shape, pools)
        self.ranges = Ranges(self.sides, chunk_rows)
        self.settler = Settler(self.sides, settle, hub)

    async def run(self) -> Result:
        res = Result("link", self.link.name)
        started = time.monotonic()
        await self.ranges.compare()
        settled, moving = await self.settler.run(dict(self.ranges.candidates))
        res.rows_a, res.rows_b = self.ranges.rows["a"], self.ranges.rows["b"]
        res.diffs, res.in_flight, res.note = settled + moving, len(moving), self.settler.note
        if not settled and not moving and res.rows_a != res.rows_b:
            # every candidate settled equal, so the counts were read mid-flight: count again
            res.rows_a, res.rows_b = await self.sides.count("a"), await self.sides.count("b")
        if settled:
            res.verdict = "different"
        elif moving or res.rows_a != res.rows_b:  # counts that differ are never "equal"
            res.verdict = "in flight"
        else:
            res.verdict = "equal"
        res.seconds = time.monotonic() - started
        return res


async def open_pools(config: Config, peers: set[str], size: int = WORKERS + 1
                     ) -> dict[str, asyncpg.Pool]:
    """One small pool per peer, in the bridge's pinned settings: key and value texts
    round-trip between sessions and print alike on both peers."""
    pools = {}
    for p in peers:
        pools[p] = await asyncpg.create_pool(
            config.peers[p].dsn, min_size=1, max_size=size, command_timeout=600,
            server_settings=pg_session.settings("syncbridge-check"))
    return pools


async def check_all(config: Config, shapes: dict[str, LinkShape], rule_names: list[str],
                    settle: float = SETTLE_SECONDS, chunk_rows: int = CHUNK_ROWS
                    ) -> list[Result]:
    """Check the given links and run the given rules; every result is recorded."""
    all_rules = rules(config)
    peers = {config.hub} | {all_rules[r]["peer"] for r in rule_names}
    results: list[Result] = []
    runnable = {}
    for name, shape in shapes.items():
        sides = {shape.link.a.peer, shape.link.b.peer}
        if any(config.peers[p].dialect != "postgres" for p in sides):
            # the T-SQL side is rendered (canonical.tsql_chunk_checksum) but not run yet
            results.append(Result("link", name, "error", error="check of a SQL Server side "
                                  "is not supported yet"))
            continue
        runnable[name] = shape
        peers |= sides
    pools = await open_pools(config, peers)
    try:
        hub = pools[config.hub]
        if runnable and not await hub.fetchval(SQL["bridge_alive"]):
            log.warning("event=no_bridge_running: queued changes are not being applied; "
                        "keys in flight are waited for %.0f s only", NO_BRIDGE_GRACE)
        for name, shape in runnable.items():
            side_pools = {s: pools[shape.link.side(s).peer] for s in ("a", "b")}
            results.append(await _guarded("link", name, LinkCheck(
                shape, side_pools, settle, chunk_rows, hub=hub).run()))
        for name in rule_names:
            rule = all_rules[name]
            results.append(await _guarded("rule", name, run_rule(rule, pools[rule["peer"]])))
        for res in results:
            await record(pools[config.hub], res)
    finally:
        for p in pools.values():
            await p.close()
    return results


async def _guarded(kind: str, name: str, work: Any) -> Result:
    try:
        return await work
    except (asyncpg.PostgresError, OSError) as e:
        return Result(kind, name, "error", error=f"{type(e).__name__}: {e}")
