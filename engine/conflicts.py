"""Conflict detection and policies for two-way links.

Images are jsonb texts named as on side a (canonical: Postgres prints jsonb
with sorted keys, and the bridge's sessions run in UTC), so comparing texts
compares rows. For one incoming row:
- source image == sink image: nothing to do (but remember it as synced);
- sink image == last-synced image: only the source changed, apply it;
- otherwise both changed since the last sync: a conflict, settled by policy.
A delete is an image of None, so edit-vs-delete is a conflict too and
delete-vs-delete is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .config import Link

APPLY, SKIP, KEEP_SINK, PARK = "apply", "skip", "keep_sink", "park"


@dataclass(frozen=True)
class Verdict:
    action: str  # APPLY, SKIP (already equal), KEEP_SINK (sink wins: re-send it), PARK (manual)
    conflict: bool
    winner: str | None = None  # 'a' / 'b' when a conflict was settled by policy


def decide(link: Link, source_side: str, source: str | None, sink: str | None,
           last: str | None, forced: bool) -> Verdict:
    if forced:
        return Verdict(APPLY, False)
    if source == sink:
        return Verdict(SKIP, False)
    if sink == last:
        return Verdict(APPLY, False)
    winner = _winner(link, source_side, source, sink)
    if winner is None:
        return Verdict(PARK, True)
    return Verdict(APPLY if winner == source_side else KEEP_SINK, True, winner)


def _winner(link: Link, source_side: str, source: str | None, sink: str | None) -> str | None:
    if link.conflict == "a_wins":
        return "a"
    if link.conflict == "b_wins":
        return "b"
    if link.conflict == "manual":
        return None
    sink_side = "b" if source_side == "a" else "a"
    ts = {source_side: _stamp(source, link.newest_column),
          sink_side: _stamp(sink, link.newest_column)}
    if ts["a"] == ts["b"]:
        return "a"  # a tie (or both unknown) goes to side a, the same way every time
    if ts["a"] is None or ts["b"] is None:
        return "a" if ts["b"] is None else "b"  # a deleted row has no stamp: the edit wins
    return "a" if ts["a"] > ts["b"] else "b"


def _stamp(image: str | None, column: str | None) -> Any:
    if image is None or column is None:
        return None
    value = json.loads(image).get(column)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value
