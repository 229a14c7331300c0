"""Conflict detection and policies for two-way links.

Images are rows named as on side a whose values are the columns' text
representations (see pg_sql), parsed into dicts: comparing them compares
stored representations exactly, column by column. None is an absent row.

The base is the image last synced (`sync.row_state`); for one incoming row:
- source image == sink image: nothing to do (but remember it as synced);
- the base is unknown (the row predates install and its two sides differed,
  or its state was lost): the incoming change is applied, never parked; when it
  replaces a sink row, sync.conflicts records it as resolved, policy no_base;
- the sink changed no column since the base (a column both sides changed to the
  same value does not count): only the source changed, apply;
- otherwise both changed since the last sync: a conflict, settled by policy.
A key the link has never synced has an absent base, so an insert on both sides
is a conflict while an insert on one side is not. A column the base lacks (it
was added later) is not counted as a change of the sink: it goes with the
incoming row until `adopt` records it.

Policies: a_wins, b_wins, newest_wins (by `newest_column`), manual (parked),
merge (column-wise three-way: both sides' edits to different columns are
kept, `merge_fallback` decides only the columns both changed) and
function:schema.fn (a resolver on the hub, see drain.PgDrain._resolve).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from syncbridge.engine.config import Link

APPLY, SKIP, KEEP_SINK, PARK, MERGE, RESOLVE = (
    "apply", "skip", "keep_sink", "park", "merge", "resolve")
NO_BASE = "no_base"  # the policy recorded when a row without a base overwrote the sink

Image = dict[str, str | None] | None


@dataclass(frozen=True)
class Verdict:
    # APPLY the source row, SKIP (already equal), KEEP_SINK (sink wins: re-send it),
    # PARK (manual), MERGE (apply `row` to the sink and re-send it), RESOLVE (ask the function)
    action: str
    conflict: bool
    winner: str | None = None  # 'a' / 'b' / 'merge' when a conflict was settled by policy
    row: Image = None  # MERGE: the merged image
    columns: tuple[str, ...] = field(default=())  # columns both sides changed
    policy: str | None = None  # recorded instead of the link's policy (NO_BASE)


def load(text: str | None) -> Image:
    """An image from its JSON text (None or 'null' = absent)."""
    return None if text is None else json.loads(text)


def dump(image: Image) -> str:
    return "null" if image is None else json.dumps(image, ensure_ascii=False, sort_keys=True)


def decide(link: Link, source_side: str, source: Image, sink: Image, base: Image,
           known: bool, forced: bool) -> Verdict:
    """What to do with one incoming row; `known` is False when the base is unknown."""
    if forced:
        return Verdict(APPLY, False)
    if source == sink:
        return Verdict(SKIP, False)
    if not known:
        # nothing tells which side changed: the incoming change wins; when it replaces
        # a sink row, that row is recorded (resolved) so no overwrite goes unseen
        if sink is None:
            return Verdict(APPLY, False)
        return Verdict(APPLY, True, source_side, policy=NO_BASE)
    # a column both sides now hold alike changed the same way on both (the same edit,
    # or DDL that converted both): not the sink's own change
    sink_cols = {c for c in changed(sink, base)
                 if c == "*" or source is None or source.get(c) != sink.get(c)}
    if not sink_cols:
        return Verdict(APPLY, False)
    policy = link.conflict
    if policy.startswith("function:"):
        return Verdict(RESOLVE, True)
    if policy == "merge":
        return _merge(link, source_side, source, sink, base, sink_cols)
    return _settle(policy, link, source_side, source, sink, ())


def settled_merge(link: Link, a: Image, b: Image, base: Image, winner: str) -> Image:
    """The row a parked merge conflict ends with once an operator picks a winner:
    both sides' edits of different columns, the winner's for the columns both changed."""
    chosen = dataclasses.replace(link, merge_fallback=f"{winner}_wins")
    v = _merge(chosen, "a", a, b, base, changed(b, base))
    return v.row if v.action == MERGE else (a if v.action == APPLY else b)


def changed(image: Image, base: Image) -> set[str]:
    """Columns of image that differ from base; '*' when the row appeared or went.

    Columns the base does not hold are not counted (unknown, not changed)."""
    if image is None or base is None:
        return set() if image is None and base is None else {"*"}
    return {c for c, v in image.items() if c in base and base[c] != v}


def _settle(policy: str, link: Link, source_side: str, source: Image, sink: Image,
            columns: tuple[str, ...]) -> Verdict:
    winner = _winner(policy, link, source_side, source, sink)
    if winner is None:
        return Verdict(PARK, True, columns=columns)
    action = APPLY if winner == source_side else KEEP_SINK
    return Verdict(action, True, winner, columns=columns)


def _merge(link: Link, source_side: str, source: Image, sink: Image, base: Image,
           sink_cols: set[str]) -> Verdict:
    """Column-wise three-way merge against the base; the fallback settles collisions."""
    src_cols = changed(source, base)
    if source is None or sink is None or base is None or "*" in src_cols | sink_cols:
        return _settle(link.merge_fallback, link, source_side, source, sink, ("*",))
    both = tuple(sorted(c for c in src_cols & sink_cols if source[c] != sink[c]))
    merged = dict(sink)
    merged.update({c: source[c] for c in src_cols if c not in both})
    if both:
        winner = _winner(link.merge_fallback, link, source_side, source, sink)
        if winner is None:
            return Verdict(PARK, True, columns=both)
        if winner == source_side:
            merged.update({c: source[c] for c in both})
    else:
        winner = "merge"
    if merged == source:
        return Verdict(APPLY, True, "merge" if not both else winner, columns=both)
    if merged == sink:
        return Verdict(KEEP_SINK, True, "merge" if not both else winner, columns=both)
    return Verdict(MERGE, True, "merge", row=merged, columns=both)


def _winner(policy: str, link: Link, source_side: str, source: Image,
            sink: Image) -> str | None:
    if policy == "a_wins":
        return "a"
    if policy == "b_wins":
        return "b"
    if policy == "manual":
        return None
    sink_side = "b" if source_side == "a" else "a"
    ts = {source_side: _stamp(source, link.newest_column),
          sink_side: _stamp(sink, link.newest_column)}
    if ts["a"] == ts["b"]:
        return "a"  # a tie (or both unknown) goes to side a, the same way every time
    if ts["a"] is None or ts["b"] is None:
        return "a" if ts["b"] is None else "b"  # a deleted row has no stamp: the edit wins
    try:
        return "a" if ts["a"] > ts["b"] else "b"
    except (TypeError, InvalidOperation):  # a time vs a number, or NaN: compare the texts
        return "a" if str(ts["a"]) > str(ts["b"]) else "b"


def _stamp(image: Image, column: str | None) -> Any:
    """The newest_column value of an image, as something that orders like the type."""
    if image is None or column is None:
        return None
    text = image.get(column)
    if text is None:
        return None
    if text in ("infinity", "-infinity"):
        big = dt.datetime.max if text == "infinity" else dt.datetime.min
        return big.replace(tzinfo=dt.UTC)
    try:
        return Decimal(text)
    except InvalidOperation:
        pass
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
