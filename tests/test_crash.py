"""SIGKILL the bridge process mid-batch; prove nothing was lost or applied twice."""

from __future__ import annotations

import signal

import pytest

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import wait_until

SCHEMA = "create table items (id int primary key, v text, n numeric(12,2));"
ROWS = 20_000
# On the sink: one row per key per committed apply. A BEFORE INSERT row trigger
# fires for every row an upsert proposes, even when ON CONFLICT then takes the
# update path (or skips an unchanged row), and it commits or rolls back with
# the batch: a batch applied twice leaves two rows for each of its keys.
APPLY_LOG = """
create table public.applies (id int not null, v text);
create function public.log_apply() returns trigger language plpgsql as $$
begin
    insert into public.applies values (new.id, new.v);
    return new;
end $$;
create trigger log_apply before insert on public.items
    for each row execute function public.log_apply();
"""


def _sink_totals(rig) -> tuple[int, int]:
    return rig.query("b", "select count(*), coalesce(sum(signals), 0) "
                          "from sync.applied_batches")[0]


def _assert_each_key_applied_once(rig) -> None:
    """Every key written to the sink by exactly one committed apply, with its row."""
    times = rig.query("b", "select n, count(*) from (select id, count(*) as n "
                           "from applies group by id) per_key group by n order by n")
    assert times == [(1, ROWS)], f"(applies of a key, keys): {times}"
    assert rig.query("b", "select count(*) from applies p join items i using (id) "
                          "where p.v is distinct from i.v") == [(0,)]
    assert rig.query("b", "select coalesce(sum(upserts), 0) from sync.applied_batches") == [
        (ROWS,)], "the batches' upsert counts add up to the rows written"


@pytest.mark.parametrize("point", ["after_claim", "after_sink_commit"])
def test_kill_at_a_fault_point_then_restart(new_db, tmp_path, point):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b",
                                                   batch_size=500)])
    try:
        rig.execute("b", APPLY_LOG)
        rig.execute("a", f"insert into items select g, 'v' || g, g / 7.0 "
                         f"from generate_series(1, {ROWS}) g")
        first = rig.start_bridge({"SYNCBRIDGE_FAULT": f"{point}:5"})
        assert first.wait(120) == -signal.SIGKILL  # its start and five takes
        queued = rig.query("a", "select count(*) from sync.queue where op = 'K'")[0][0]
        recorded = _sink_totals(rig)[1]
        if point == "after_claim":  # the taken batch rolled back: its signals are queued again
            assert queued + recorded == ROWS
        else:  # the fifth batch is applied and recorded, its signals still queued at the
            # source, and so may be the fourth's (its source commit runs while the fifth
            # applies): exactly the recorded batches recovery finishes
            ids = [i for (i,) in rig.query("a", "select id from sync.queue where op = 'K'")]
            [(last, back)] = rig.query(
                "b", "select (array_agg(signals order by applied_at desc))[1], "
                     "coalesce(sum(signals) filter (where exists (select 1 from "
                     "unnest(%s::int8[]) q where queue_ids @> q)), 0) "
                     "from sync.applied_batches", (ids,))
            assert last <= back <= recorded, "the fifth batch's signals at least are back"
            assert queued + recorded == ROWS + back
            assert rig.query("b", "select count(*) from sync.applied_batches") == [(5,)]
        rig.start_bridge()
        rig.wait_equal({"items": ["id"]}, 60)
        rig.wait_drained()
        _assert_each_key_applied_once(rig)
        assert _sink_totals(rig)[1] == ROWS, "every signal consumed by exactly one applied batch"
        assert ("event=recovered" in rig.log_text()) == (point == "after_sink_commit")
        assert rig.stop_bridge() == 0
    finally:
        rig.close()


def test_random_kills_during_a_large_load(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b",
                                                   batch_size=1000)])
    try:
        rig.execute("b", APPLY_LOG)
        rig.execute("a", "insert into items select g, 'v' || g, g "
                         f"from generate_series(1, {ROWS}) g")
        for _ in range(3):
            rig.start_bridge()
            # kill once the sink has taken some batches but before it is done
            before = _sink_totals(rig)[0]
            wait_until(lambda b=before: _sink_totals(rig)[0] > b, 60, "a batch to land")
            rig.stop_bridge(signal.SIGKILL)
        rig.start_bridge()
        rig.wait_equal({"items": ["id"]}, 60)
        rig.wait_drained()
        _assert_each_key_applied_once(rig)
        assert _sink_totals(rig)[1] == ROWS
    finally:
        rig.close()


def test_signals_back_without_their_batch_are_recovered_not_applied_twice(new_db, tmp_path):
    """A source commit lost after the sink committed (the source runs it without waiting
    for a flush; a server crash can drop it) puts the batch's signals back while the
    bridge runs. The next take gets them; the sink's record of the earlier batch names
    them, so the apply is undone and that batch is recovered instead: once, not twice."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")])
    try:
        rig.execute("b", APPLY_LOG)
        rig.start_bridge()
        rig.execute("a", "insert into items values (1, 'x', 1)")
        rig.wait_equal({"items": ["id"]})
        rig.wait_drained()
        [(ids,)] = rig.query("b", "select queue_ids::text from sync.applied_batches")
        signal_id = int(ids.strip("{[").split(",")[0])
        # the lost commit: the signal is back under its own id; a NOTIFY wakes the drain
        rig.execute("a", "insert into sync.queue (id, link, side, key) overriding system value "
                         "values (%s, 'items', 'a', '{\"id\": 1}')", (signal_id,))
        rig.execute("a", "select pg_notify('syncbridge', 'items:a')")
        wait_until(lambda: "event=recovered" in rig.log_text(), 30, "the batch to be recovered")
        rig.wait_drained()
        assert "AlreadyApplied" in rig.log_text() or "applied before" in rig.log_text()
        assert rig.query("b", "select count(*) from applies") == [(1,)], "applied once"
        assert rig.query("b", "select count(*), sum(signals) from sync.applied_batches") == [(1, 1)]
        assert rig.stop_bridge() == 0
    finally:
        rig.close()
