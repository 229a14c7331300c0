"""Two-way links: conflicts are detected, settled by policy, and recorded once.

Each scenario edits both sides while the bridge is stopped, so the edits are
truly concurrent from the bridge's point of view, then starts it.
"""

from __future__ import annotations

import signal
import threading

import psycopg
import pytest

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import wait_until

SCHEMA = "create table people (id int primary key, name text, phone text, changed timestamptz);"
T_OLD, T_NEW = "2026-01-01 10:00+00", "2026-01-01 11:00+00"


def _rig(new_db, tmp_path, policy: str):
    extra = {"conflict": policy}
    if policy == "newest_wins":
        extra["newest_column"] = "changed"
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("people", "people", ["id"], **extra)])
    rig.start_bridge()
    rig.execute("a", f"insert into people select g, 'p' || g, '000', '{T_OLD}' "
                     "from generate_series(1, 4) g")
    rig.wait_equal({"people": ["id"]})
    rig.wait_drained()
    assert rig.stop_bridge() == 0
    return rig


def _concurrent_edits(rig) -> None:
    rig.execute("a", f"update people set phone = 'a1', changed = '{T_NEW}' where id = 1")
    rig.execute("b", f"update people set phone = 'b1', changed = '{T_OLD}' where id = 1")
    rig.execute("a", f"update people set phone = 'a2', changed = '{T_OLD}' where id = 2")
    rig.execute("b", "delete from people where id = 2")
    rig.execute("a", "delete from people where id = 3")
    rig.execute("b", "delete from people where id = 3")
    rig.execute("a", f"insert into people values (5, 'a5', 'a5', '{T_OLD}')")
    rig.execute("b", f"insert into people values (5, 'b5', 'b5', '{T_NEW}')")


def _phones(rig, side: str) -> dict[int, str]:
    return {r[0]: r[2] for r in rig.rows(side, "people", ["id"])}


def _conflicts(rig) -> list[tuple]:
    return rig.query("a", "select key->>'id', winner, status, a_image->>'phone', "
                          "b_image->>'phone', last_image->>'phone' from sync.conflicts "
                          "order by (key->>'id')::int")


EXPECTED = {
    # policy: (final phones, winners of conflicts on keys 1, 2, 5)
    "a_wins": ({1: "a1", 2: "a2", 4: "000", 5: "a5"}, ["a", "a", "a"]),
    "b_wins": ({1: "b1", 4: "000", 5: "b5"}, ["b", "b", "b"]),
    "newest_wins": ({1: "a1", 2: "a2", 4: "000", 5: "b5"}, ["a", "a", "b"]),
}


@pytest.mark.parametrize("policy", list(EXPECTED))
def test_policy_settles_every_kind_of_conflict(new_db, tmp_path, policy):
    rig = _rig(new_db, tmp_path, policy)
    try:
        _concurrent_edits(rig)
        rig.start_bridge()
        rig.wait_equal({"people": ["id"]})
        rig.wait_drained()
        phones, winners = EXPECTED[policy]
        assert _phones(rig, "a") == phones
        found = _conflicts(rig)
        # delete/delete (key 3) is not a conflict; update/update, update/delete, insert/insert are
        assert [c[0] for c in found] == ["1", "2", "5"]
        assert [c[1] for c in found] == winners
        assert all(c[2] == "resolved" for c in found)
        assert found[0][3:] == ("a1", "b1", "000")  # both images and the last-synced one
        assert found[1][4] is None  # the deleted side's image is absent
    finally:
        rig.close()


def test_manual_conflicts_wait_and_resolve_through_sql(new_db, tmp_path):
    rig = _rig(new_db, tmp_path, "manual")
    try:
        _concurrent_edits(rig)
        rig.start_bridge()
        wait_until(lambda: len(_conflicts(rig)) == 3, 30, "three open conflicts")
        rig.wait_drained()
        assert all(c[2] == "open" and c[1] is None for c in _conflicts(rig))
        # neither side was changed
        assert _phones(rig, "a")[1] == "a1" and _phones(rig, "b")[1] == "b1"
        assert 5 in _phones(rig, "b") and _phones(rig, "b")[5] == "b5"
        wait_until(lambda: rig.query("a", "select max(open_conflicts) from sync.status")
                   == [(3,)], 10, "sync.status to count them")
        ids = {c[0]: c for c in rig.query("a", "select key->>'id', id from sync.conflicts")}
        for key, winner in (("1", "b"), ("2", "a"), ("5", "a")):
            rig.execute("a", "select sync.resolve_conflict(%s, %s)", (ids[key][1], winner))
        with pytest.raises(psycopg.errors.RaiseException):
            rig.execute("a", "select sync.resolve_conflict(%s, 'b')", (ids["1"][1],))
        rig.wait_equal({"people": ["id"]})
        rig.wait_drained()
        assert _phones(rig, "a") == {1: "b1", 2: "a2", 4: "000", 5: "a5"}
        assert [c[2] for c in _conflicts(rig)] == ["resolved"] * 3
        by = rig.query("a", "select distinct resolved_by from sync.conflicts")
        assert by == [("postgres",)]
    finally:
        rig.close()


def test_busy_non_conflicting_edits_make_no_conflicts(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("people", "people", ["id"],
                                                   conflict="manual")])
    try:
        rig.start_bridge()

        def writer(side: str, lo: int) -> None:
            with psycopg.connect(rig.dsn[side], autocommit=True) as c:
                for i in range(lo, lo + 200):
                    c.execute("insert into people values (%s, 'n', '1', now())", (i,))
                    c.execute("update people set phone = '2' where id = %s", (i,))
                    if i % 5 == 0:
                        c.execute("delete from people where id = %s", (i,))

        threads = [threading.Thread(target=writer, args=a) for a in (("a", 0), ("b", 1000))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rig.wait_equal({"people": ["id"]})
        # one key edited on alternating sides, each edit after the last one synced
        for i, side in enumerate("abababab"):
            rig.execute(side, "update people set phone = %s where id = 1", (f"turn{i}",))
            other = "a" if side == "b" else "b"
            wait_until(lambda i=i, o=other: _phones(rig, o).get(1) == f"turn{i}",
                       20, "the edit to cross")
        rig.wait_drained()
        assert rig.query("a", "select count(*) from sync.conflicts") == [(0,)]
    finally:
        rig.close()


def test_kill_while_resolving_loses_and_doubles_nothing(new_db, tmp_path):
    rig = _rig(new_db, tmp_path, "b_wins")
    try:
        _concurrent_edits(rig)
        proc = rig.start_bridge({"SYNCBRIDGE_FAULT": "after_sink_commit:1"})
        assert proc.wait(60) == -signal.SIGKILL  # its start and the first batch
        rig.start_bridge()
        rig.wait_equal({"people": ["id"]})
        rig.wait_drained()
        assert _phones(rig, "a") == EXPECTED["b_wins"][0]
        found = _conflicts(rig)
        assert [c[0] for c in found] == ["1", "2", "5"], "each conflict recorded exactly once"
        assert [c[1] for c in found] == ["b", "b", "b"]
    finally:
        rig.close()
