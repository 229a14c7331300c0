"""SIGKILL the bridge process mid-batch; prove nothing was lost or applied twice."""

from __future__ import annotations

import signal

import pytest

from rigs import link, make_rig
from syncbridge.bridge.rig import wait_until

SCHEMA = "create table items (id int primary key, v text, n numeric(12,2));"
ROWS = 20_000


def _sink_totals(rig) -> tuple[int, int, int]:
    return rig.query("b", "select count(*), count(distinct batch_id), coalesce(sum(signals), 0) "
                          "from sync.applied_batches")[0]


@pytest.mark.parametrize("point", ["after_claim", "after_sink_commit"])
def test_kill_at_a_fault_point_then_restart(new_db, tmp_path, point):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b",
                                                   batch_size=500)])
    try:
        rig.execute("a", f"insert into items select g, 'v' || g, g / 7.0 "
                         f"from generate_series(1, {ROWS}) g")
        first = rig.start_bridge({"SYNCBRIDGE_FAULT": f"{point}:5"})
        assert first.wait(60) == -signal.SIGKILL
        claimed = rig.query("a", "select count(*) from sync.queue where batch_id is not null")[0][0]
        assert claimed > 0, "the kill should leave a claimed, unfinished batch behind"
        rig.start_bridge()
        rig.wait_equal({"items": ["id"]}, 60)
        rig.wait_drained()
        batches, distinct, signals = _sink_totals(rig)
        assert batches == distinct
        assert signals == ROWS, "every signal consumed by exactly one applied batch"
        assert "event=recovered" in rig.log_text()
        assert rig.stop_bridge() == 0
    finally:
        rig.close()


def test_random_kills_during_a_large_load(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b",
                                                   batch_size=1000)])
    try:
        rig.execute("a", "insert into items select g, 'v' || g, g "
                         f"from generate_series(1, {ROWS}) g")
        for _ in range(3):
            rig.start_bridge()
            # kill once the sink has taken some batches but before it is done
            before = _sink_totals(rig)[0]
            wait_until(lambda b=before: _sink_totals(rig)[0] > b, 30, "a batch to land")
            rig.stop_bridge(signal.SIGKILL)
        rig.start_bridge()
        rig.wait_equal({"items": ["id"]}, 60)
        rig.wait_drained()
        batches, distinct, signals = _sink_totals(rig)
        assert batches == distinct and signals == ROWS
    finally:
        rig.close()
