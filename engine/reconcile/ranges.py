"""Bisection of a link's key space down to the keys that may differ.

The key space is chunked by every CHUNK_ROWS-th key of side a (or by arithmetic
for one integer key); each range's (row count, sum of 64 bits of md5(canonical
row text)) is computed in both databases. A range that differs is split again
by the keys of its larger side (FANOUT parts) until it holds at most LEAF_ROWS
rows; then both sides send (canonical key, md5) per row and the keys that are
missing or different become candidates (settle.py decides which are real).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from syncbridge.engine.reconcile.results import Candidate
from syncbridge.engine.reconcile.sides import Sides

CHUNK_ROWS = 10_000  # rows per top-level range: one checksum query each side
LEAF_ROWS = 2_000  # a differing range this small is compared row by row
FANOUT = 16  # parts a differing range is split into

Bound = tuple[str, ...] | None  # key column values as text, None = open end


def _args(lo: Bound, hi: Bound) -> list[str]:
    return [*(lo or ()), *(hi or ())]


def _rename(key: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names[k]: v for k, v in key.items()}


class Ranges:
    """Compare both sides range by range; collects candidates and the top-level row counts."""

    def __init__(self, sides: Sides, chunk_rows: int = CHUNK_ROWS) -> None:
        self.sides = sides
        self.sql = sides.sql
        self.chunk_rows = chunk_rows
        pairs = sides.shape.key_pairs()
        self.b_to_a = {cb: ca for ca, cb in pairs}
        self.a_to_b = dict(pairs)
        self.candidates: dict[str, Candidate] = {}  # by canonical key text
        self.rows = {"a": 0, "b": 0}

    async def compare(self) -> None:
        """Walk the whole key space (top-level ranges concurrently)."""
        bounds = await self._plan()
        ranges = list(zip([None, *bounds], [*bounds, None], strict=True))
        await asyncio.gather(*(self._range(lo, hi, top=True) for lo, hi in ranges))

    async def _sum(self, side: str, lo: Bound, hi: Bound) -> tuple[int, str]:
        stmt = self.sql[side].stmt("chunk_checksum", lo is not None, hi is not None)
        row = (await self.sides.fetch(side, stmt, *_args(lo, hi)))[0]
        return row["n"], row["h"]

    async def _bounds(self, side: str, lo: Bound, hi: Bound, step: int) -> list[Bound]:
        stmt = self.sql[side].stmt("boundaries", lo is not None, hi is not None, step)
        return [tuple(r) for r in await self.sides.fetch(side, stmt, *_args(lo, hi))]

    async def _plan(self) -> list[Bound]:
        """Top-level chunk bounds: by arithmetic for one integer key (reltuples sized,
        no scan), else every chunk_rows-th key of side a (one index-only scan)."""
        if not self.sql["a"].int_key:
            return await self._bounds("a", None, None, self.chunk_rows)
        row = (await self.sides.fetch("a", self.sql["a"].span))[0]
        if row["lo"] is None or not row["estimate"]:  # empty, or never analyzed: scan keys
            return await self._bounds("a", None, None, self.chunk_rows)
        lo, hi = int(row["lo"]), int(row["hi"])
        parts = max(1, min(math.ceil(row["estimate"] / self.chunk_rows), hi - lo + 1))
        width = (hi - lo + 1) / parts
        return [(str(lo - 1 + round(width * i)),) for i in range(1, parts)]

    async def _range(self, lo: Bound, hi: Bound, top: bool = False) -> None:
        (na, ha), (nb, hb) = await asyncio.gather(self._sum("a", lo, hi), self._sum("b", lo, hi))
        if top:
            self.rows["a"] += na
            self.rows["b"] += nb
        if (na, ha) == (nb, hb):
            return
        if max(na, nb) <= LEAF_ROWS:
            await self._leaf(lo, hi)
            return
        side = "a" if na >= nb else "b"
        step = math.ceil(max(na, nb) / FANOUT)
        inner = [b for b in await self._bounds(side, lo, hi, step) if b != hi]
        parts = list(zip([lo, *inner], [*inner, hi], strict=True))
        if len(parts) == 1:  # rows vanished meanwhile: no split point, compare rows
            await self._leaf(lo, hi)
            return
        await asyncio.gather(*(self._range(a, b) for a, b in parts))

    async def _leaf(self, lo: Bound, hi: Bound) -> None:
        rows = await asyncio.gather(*(
            self.sides.fetch(s, self.sql[s].stmt("leaf_rows", lo is not None, hi is not None),
                             *_args(lo, hi)) for s in ("a", "b")))
        ra = {r["ck"]: (r["k"], r["h"]) for r in rows[0]}
        rb = {r["ck"]: (r["k"], r["h"]) for r in rows[1]}
        for ck in ra.keys() | rb.keys():
            a, b = ra.get(ck), rb.get(ck)
            if a and b and a[1] == b[1]:
                continue
            key_a = json.loads(a[0]) if a else _rename(json.loads(b[0]), self.b_to_a)
            key_b = json.loads(b[0]) if b else _rename(key_a, self.a_to_b)
            self.candidates[ck] = Candidate(key_a, key_b)
