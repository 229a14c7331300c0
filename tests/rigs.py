"""Test helpers around bridge.rig: a two-database rig per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncbridge.bridge.bench.rig import Rig


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
