"""What a check found, how it is recorded on the hub and how it is reported.

A result goes to sync.check_runs / sync.check_diffs on the hub, where `repair`
reads the differing keys of the last check and `status` shows the verdict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from syncbridge.engine import sqlfiles
from syncbridge.engine.reconcile import canonical

SQL = sqlfiles.Queries("queries/reconcile.sql")

RULE_ROWS_KEPT = 1_000  # violating rows of one rule stored in sync.check_diffs


@dataclass
class Diff:
    kind: str  # missing_on_a | missing_on_b | different | violation
    key_a: dict[str, Any] | None
    key_b: dict[str, Any] | None
    columns: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def same_as(self, other: Diff | None) -> bool:
        return other is not None and (self.kind, self.columns, self.detail) == (
            other.kind, other.columns, other.detail)


@dataclass
class Result:
    kind: str  # link | rule
    name: str
    verdict: str = "error"
    rows_a: int | None = None
    rows_b: int | None = None
    diffs: list[Diff] = field(default_factory=list)
    in_flight: int = 0
    error: str | None = None
    note: str | None = None  # e.g. "no bridge running"
    seconds: float = 0.0
    run_id: int | None = None

    def count(self, kind: str) -> int:
        return sum(1 for d in self.diffs if d.kind == kind)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "verdict": self.verdict, "run_id": self.run_id,
            "rows_a": self.rows_a, "rows_b": self.rows_b, "seconds": round(self.seconds, 3),
            "missing_on_a": self.count("missing_on_a"), "missing_on_b": self.count("missing_on_b"),
            "different": self.count("different"), "violations": self.count("violation"),
            "in_flight": self.in_flight, "error": self.error, "note": self.note,
            "diffs": [d.__dict__ for d in self.diffs],
        }


@dataclass
class Candidate:
    """A key whose range compare differed, in each side's column names (not yet settled)."""

    key_a: dict[str, Any]
    key_b: dict[str, Any]


def field_text(f: str) -> str | None:
    """'N' -> None, '<len>:<text>' or ':<text>' -> text (for the report)."""
    return None if f == canonical.NULL else f.split(":", 1)[1]


async def record(hub: asyncpg.Pool, res: Result) -> None:
    """Store a finished result in sync.check_runs / sync.check_diffs on the hub."""
    async with hub.acquire() as conn, conn.transaction():
        res.run_id = await conn.fetchval(SQL["start_check"], res.kind, res.name)
        kept = res.diffs[:RULE_ROWS_KEPT] if res.kind == "rule" else res.diffs
        if kept:
            await conn.execute(SQL["add_diffs"], res.run_id,
                               json.dumps([d.__dict__ for d in kept]))
        await conn.execute(
            SQL["finish_check"], res.run_id, res.verdict, res.rows_a, res.rows_b,
            res.count("missing_on_a"), res.count("missing_on_b"), res.count("different"),
            res.count("violation"), res.in_flight, res.error, res.seconds)


def exit_code(results: list[Result]) -> int:
    """0 all equal / ok, 1 something differs or a rule is violated, 2 an error,
    3 keys still in flight (nothing settled differs)."""
    if any(r.verdict == "error" for r in results):
        return 2
    if any(r.verdict in ("different", "violated") for r in results):
        return 1
    return 3 if any(r.verdict == "in flight" for r in results) else 0


def summary(res: Result) -> str:
    """The one line `syncbridge check` prints per link or rule."""
    if res.verdict == "error":
        return f"{res.kind} {res.name}: ERROR {res.error}"
    if res.kind == "rule":
        return f"rule {res.name}: {res.verdict} ({res.count('violation')} row(s), " \
               f"{res.seconds:.2f}s)"
    line = (f"link {res.name}: {res.verdict} (a {res.rows_a} rows, b {res.rows_b} rows, "
            f"{res.seconds:.2f}s)")
    if res.diffs:
        line += (f"; missing on a {res.count('missing_on_a')}, missing on b "
                 f"{res.count('missing_on_b')}, different {res.count('different')}")
    if res.in_flight:
        line += f"; {res.in_flight} key(s) still in flight"
    if res.note:
        line += f" [{res.note}]"
    return line
