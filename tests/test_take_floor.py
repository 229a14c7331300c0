"""The take's floor (engine/postgres/held.py Floor): takes skip the queue ids below it,
the dead index entries of drained signals, and still leave no signal behind.

The end-to-end tests run the bridge with SYNCBRIDGE_FULL_TAKE_EVERY at an hour, so a
signal below the floor could only arrive through the floor's own rule, never through
the periodic take without a floor."""

from __future__ import annotations

import psycopg

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.postgres.held import Floor

NO_FULL_TAKES = {"SYNCBRIDGE_FULL_TAKE_EVERY": "3600"}


def test_the_floor_rises_only_once_the_writers_running_at_a_take_have_ended():
    f = Floor()
    f.full_at = float("inf")  # no take without a floor here
    f.took(12, xmin=100, xmax=105)  # ids up to 12
    assert f.floor == 0  # writers 100..104 may still hold ids below 12
    f.took(13, xmin=103, xmax=106)
    assert f.floor == 0  # 103 and 104 may still be running
    f.took(15, xmin=105, xmax=107)
    assert f.floor == 12  # every writer below 105 has ended: ids up to 12 were seen
    f.took(16, xmin=107, xmax=108)
    assert f.floor == 15


def test_the_floor_never_passes_the_ids_the_rising_take_covered():
    f = Floor()
    f.full_at = float("inf")
    f.took(100, xmin=10, xmax=20)
    # the take that finds those writers ended covered ids up to 60 only (its limit)
    f.took(60, xmin=25, xmax=30)
    assert f.floor == 60
    f.took(70, xmin=31, xmax=32)
    assert f.floor == 60  # what the 60 take vouches for (its writers) is not yet known
    f.took(80, xmin=33, xmax=34)
    assert f.floor == 70
    f.reset()
    assert f.floor == 0 and f.next() == 0


def test_a_signal_written_before_others_but_committed_after_them_arrives(new_db, tmp_path):
    """A writer holds its transaction open with a signal whose id is below those of many
    later writers; the bridge drains those meanwhile. Its commit must still reach the sink
    (with no periodic take without a floor to find it)."""
    rig = make_rig(new_db, tmp_path, "create table lc (id int primary key, v text)",
                   [link("lc", "lc", ["id"], "a_to_b")])
    try:
        rig.start_bridge(NO_FULL_TAKES)
        rig.execute("a", "insert into lc values (0, 'first')")
        wait_until(lambda: rig.query("b", "select count(*) from lc") == [(1,)], 30, "row 0")
        with psycopg.connect(rig.dsn["a"]) as late:
            late.execute("insert into lc values (1, 'late')")  # its signal id is taken now
            for i in range(2, 40):
                rig.execute("a", f"insert into lc values ({i}, 'x')")
                wait_until(lambda i=i: rig.query("b", f"select count(*) from lc where id = {i}")
                           == [(1,)], 30, f"row {i}")
            late.commit()
        wait_until(lambda: rig.equal("lc", ["id"]), 30, "the late row")
        # and a writer that ended before the next take: the floor has risen past its id
        for i in range(40, 60):
            rig.execute("a", f"insert into lc values ({i}, 'y')")
        wait_until(lambda: rig.equal("lc", ["id"]), 30, "rows after the late one")
        rig.wait_drained()
    finally:
        rig.close()
