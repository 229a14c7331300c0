"""conflicts.decide, one rule at a time (no database: the decision is pure)."""

from __future__ import annotations

import dataclasses

import pytest

from syncbridge.engine import conflicts as c
from syncbridge.engine.config import Link, Side

LINK = Link(name="l", a=Side("a", "public", "t"), b=Side("b", "public", "t"), key=("id",),
            columns=None, exclude=(), direction="both", conflict="a_wins",
            newest_column="at", notify=True, batch_size=10)
BASE = {"id": "1", "name": "n", "phone": "p", "at": "2026-01-01 10:00:00+00"}


def row(**changes: str | None) -> dict:
    return {**BASE, **changes}


def decide(source, sink, base=BASE, known=True, forced=False, side="a", **link):
    return c.decide(dataclasses.replace(LINK, **link), side, source, sink, base, known, forced)


def test_one_side_changed_is_never_a_conflict():
    assert decide(row(name="x"), BASE) == c.Verdict(c.APPLY, False)
    assert decide(None, BASE) == c.Verdict(c.APPLY, False)  # a delete on one side
    assert decide(row(), None, base=None) == c.Verdict(c.APPLY, False)  # a new row


def test_equal_rows_are_skipped_and_deletes_on_both_sides_agree():
    assert decide(row(name="x"), row(name="x")) == c.Verdict(c.SKIP, False)
    assert decide(None, None) == c.Verdict(c.SKIP, False)


def test_an_unknown_base_takes_the_incoming_change_and_records_an_overwrite():
    assert decide(row(name="x"), row(name="y"), base=None, known=False) == c.Verdict(
        c.APPLY, True, "a", policy=c.NO_BASE)
    assert decide(row(name="x"), None, base=None, known=False) == c.Verdict(c.APPLY, False)


def test_an_insert_on_both_sides_is_a_conflict():
    v = decide(row(name="a"), row(name="b"), base=None)
    assert (v.action, v.conflict, v.winner) == (c.APPLY, True, "a")


def test_a_column_the_base_lacks_is_not_a_change_of_the_sink():
    base = {k: v for k, v in BASE.items() if k != "phone"}
    assert decide(row(name="x", phone="a"), row(phone="b"), base=base).action == c.APPLY


def test_forced_is_applied_unchecked():
    assert decide(row(name="x"), row(name="y"), forced=True) == c.Verdict(c.APPLY, False)


@pytest.mark.parametrize(("policy", "side", "action", "winner"), [
    ("a_wins", "a", c.APPLY, "a"), ("a_wins", "b", c.KEEP_SINK, "a"),
    ("b_wins", "a", c.KEEP_SINK, "b"), ("manual", "a", c.PARK, None),
])
def test_whole_row_policies(policy, side, action, winner):
    v = decide(row(name="x"), row(name="y"), side=side, conflict=policy)
    assert (v.action, v.conflict, v.winner) == (action, True, winner)


def test_newest_wins_reads_the_column_as_a_time_and_an_edit_beats_a_delete():
    newer = row(name="x", at="2026-01-01 11:00:00+00")
    assert decide(newer, row(name="y"), conflict="newest_wins").winner == "a"
    assert decide(row(name="y"), newer, conflict="newest_wins").winner == "b"
    assert decide(None, row(name="y"), conflict="newest_wins").winner == "b"
    numbers = dataclasses.replace(LINK, conflict="newest_wins", newest_column="id")
    assert c._winner("newest_wins", numbers, "a", row(id="9"), row(id="10")) == "b"


def test_merge_keeps_disjoint_edits_and_falls_back_on_collisions():
    v = decide(row(name="x"), row(phone="y"), conflict="merge")
    assert v == c.Verdict(c.MERGE, True, "merge", row=row(name="x", phone="y"))
    v = decide(row(name="x", phone="a"), row(phone="b"), conflict="merge",
               merge_fallback="b_wins")
    assert (v.action, v.row, v.columns) == (c.MERGE, row(name="x", phone="b"), ("phone",))
    v = decide(row(phone="a"), row(phone="b"), conflict="merge", merge_fallback="a_wins")
    assert (v.action, v.columns) == (c.APPLY, ("phone",))
    v = decide(row(phone="a"), row(phone="b"), conflict="merge", merge_fallback="manual")
    assert (v.action, v.columns) == (c.PARK, ("phone",))
    v = decide(None, row(phone="b"), conflict="merge", merge_fallback="a_wins")
    assert (v.action, v.columns) == (c.APPLY, ("*",))  # a delete collides with everything


def test_a_resolver_is_asked_only_for_real_conflicts():
    assert decide(row(name="x"), BASE, conflict="function:s.fn").action == c.APPLY
    assert decide(row(name="x"), row(phone="y"), conflict="function:s.fn").action == c.RESOLVE


def test_the_same_change_on_both_sides_is_not_a_conflict():
    """e.g. an ALTER TYPE that converted a column on both peers, then one side's edit."""
    assert decide(row(name="x", at="converted"), row(at="converted")).action == c.APPLY
