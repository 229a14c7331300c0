"""Test helpers around bridge.rig: a two-database rig per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncbridge.bridge.bench import rig as bench_rig

# How long "eventually" may take here: a `syncbridge run` started by a test spends
# 5-8 s on its imports alone on two cores shared with other test runs, and the
# rig's 30 s defaults (sized for the demo and benches) left a loaded machine too
# little of that. Only a bug (never converging) exceeds it; passing runs never wait it.
EVENTUALLY = 90.0
# Bridge environments that pick how one-way batches travel (engine/postgres/staged.py):
# STAGED stages every batch, so a test of a few rows runs the COPY path that only
# large batches take otherwise; ITEMS never stages, so a large batch runs the item path.
STAGED = {"SYNCBRIDGE_STAGE_FROM": "1"}
ITEMS = {"SYNCBRIDGE_STAGE_FROM": str(10**9)}
TRANSPORTS = {"items": ITEMS, "staged": STAGED}  # parametrize ids -> the bridge's extra env


class Rig(bench_rig.Rig):
    """bench.rig.Rig with the tests' patience for convergence and draining."""

    def wait_equal(self, tables: dict[str, list[str]], timeout: float = EVENTUALLY) -> None:
        super().wait_equal(tables, timeout)

    def wait_drained(self, timeout: float = EVENTUALLY) -> None:
        super().wait_drained(timeout)


def make_rig(new_db, tmp_path: Path, schema: str, links: list[dict[str, Any]],
             settings: dict[str, Any] | None = None, schema_b: str | None = None) -> Rig:
    rig = Rig(tmp_path, new_db("a"), new_db("b"), links, settings)
    rig.execute("a", schema)
    rig.execute("b", schema_b or schema)
    rig.setup()
    return rig


def link(name: str, table: str, key: list[str], direction: str = "both", **extra: Any) -> dict:
    return {"name": name, "a": {"peer": "a", "table": table}, "b": {"peer": "b", "table": table},
            "key": key, "direction": direction, **extra}
