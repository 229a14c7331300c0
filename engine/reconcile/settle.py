"""Settling of candidate keys: report a key only when the answer is stable.

Every candidate is re-read from both sides by key, and reported only when two
reads in a row agree and no signal for it is queued or claimed on either side:
a change in flight (captured but not yet applied) is waited for, up to a
deadline, instead of being reported. With no bridge beating nothing will land,
so after NO_BRIDGE_GRACE nothing more is waited for and the result says so.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg

from syncbridge.engine import sqlfiles
from syncbridge.engine.reconcile.results import Candidate, Diff, field_text
from syncbridge.engine.reconcile.sides import Sides

SQL = sqlfiles.Queries("queries/reconcile.sql")

SETTLE_SECONDS = 30.0  # how long to wait for in-flight keys before reporting them
NO_BRIDGE_GRACE = 5.0  # s; with no bridge beating, in-flight keys are waited for this long


def _norm(key: dict[str, Any] | str) -> str:
    """One text per key whatever its key order or spacing (jsonb text vs json.dumps)."""
    return json.dumps(json.loads(key) if isinstance(key, str) else key, sort_keys=True)


class Settler:
    """Re-read candidates until they settle; `note` says why waiting stopped early."""

    def __init__(self, sides: Sides, settle: float = SETTLE_SECONDS,
                 hub: asyncpg.Pool | None = None) -> None:
        self.sides = sides
        self.settle = settle
        self.hub = hub  # to see whether a bridge is running (None: assume one is)
        self.note: str | None = None

    async def observe(self, cands: dict[str, Candidate]) -> dict[str, Diff]:
        """Current diffs among the candidates (keys now equal are left out)."""
        got = await asyncio.gather(*(
            self.sides.fetch(s, self.sides.sql[s].by_keys(), json.dumps(
                [c.key_a if s == "a" else c.key_b for c in cands.values()]))
            for s in ("a", "b")))
        ra = {r["ck"]: list(r["f"]) for r in got[0]}
        rb = {r["ck"]: list(r["f"]) for r in got[1]}
        out: dict[str, Diff] = {}
        names = self.sides.sql["a"].cols
        for ck, c in cands.items():
            fa, fb = ra.get(ck), rb.get(ck)
            if fa is not None and fb is not None:
                cols = [i for i, (x, y) in enumerate(zip(fa, fb, strict=True)) if x != y]
                if cols:
                    out[ck] = Diff("different", c.key_a, c.key_b, [names[i] for i in cols], {
                        "a": {names[i]: field_text(fa[i]) for i in cols},
                        "b": {names[i]: field_text(fb[i]) for i in cols}})
            elif fa is not None:
                out[ck] = Diff("missing_on_b", c.key_a, c.key_b)
            elif fb is not None:
                out[ck] = Diff("missing_on_a", c.key_a, c.key_b)
        return out

    async def queued(self, cands: dict[str, Candidate]) -> set[str]:
        """Candidates with a signal queued or claimed on either side."""
        hit: set[str] = set()
        for side in ("a", "b"):
            by_key = {_norm(c.key_a if side == "a" else c.key_b): ck for ck, c in cands.items()}
            rows = await self.sides.fetch(side, SQL["queued_keys"], self.sides.link.name, side,
                                          list(by_key))
            for r in rows:
                if r["key"] is None:
                    return set(cands)
                ck = by_key.get(_norm(r["key"]))
                if ck is not None:
                    hit.add(ck)
        return hit

    async def bridge(self) -> bool:
        """Is an active bridge beating (so queued keys will land)?"""
        return self.hub is None or bool(await self.hub.fetchval(SQL["bridge_alive"]))

    async def run(self, cands: dict[str, Candidate]) -> tuple[list[Diff], list[Diff]]:
        """Report a key only when two reads agree with nothing queued for it.

        Returns (settled differences, keys still in flight at the deadline)."""
        if not cands:
            return [], []
        started = time.monotonic()
        deadline = started + self.settle
        prev = await self.observe(cands)
        pending = {ck: cands[ck] for ck in prev}
        final: dict[str, Diff] = {}
        while pending:
            before = await self.queued(pending)
            if before and time.monotonic() < deadline:
                if time.monotonic() - started > NO_BRIDGE_GRACE and not await self.bridge():
                    self.note = "no bridge running"  # nothing will land: stop waiting
                    deadline = time.monotonic()
                    continue
                await asyncio.sleep(0.1)
                continue
            now = await self.observe(pending)
            after = await self.queued(pending)
            for ck in list(pending):
                d = now.get(ck)
                if d is None:  # equal now: it was in flight
                    del pending[ck]
                elif ck not in before and ck not in after and d.same_as(prev.get(ck)):
                    final[ck] = d
                    del pending[ck]
            if pending and time.monotonic() >= deadline:
                return list(final.values()), [now[ck] for ck in pending]
            prev = now
        return list(final.values()), []
