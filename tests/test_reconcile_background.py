"""The bridge's background task: scheduled checks with auto repair, and sync.resync().

Everything here is done by the `syncbridge run` process: the test runs no
check, repair or backfill itself, so every check_runs row and every repaired
row can only come from the bridge's own background loop (and its log names
the run ids it wrote).
"""

from __future__ import annotations

import re

import psycopg

from rigs import Rig, link
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.reconcile import schedule as reconcile

SCHEMA = "create table items (id int primary key, v text);"


def test_scheduled_check_repairs_and_resync_backfills(new_db, tmp_path):
    rig = Rig(tmp_path, new_db("a", migrated=True), new_db("b", migrated=True),
              [link("items", "items", ["id"], "a_to_b", check_every="1s", repair="auto")])
    try:
        for side in ("a", "b"):
            rig.execute(side, SCHEMA)
        rig.execute("a", "insert into items select g, 'v' || g from generate_series(1, 500) g")
        rig.setup()
        assert reconcile.schedules(rig.config) == {"items": (1.0, True)}
        rig.execute("a", "select sync.resync('items')")
        rig.start_bridge()
        # the requested resync: only the bridge's background loop starts it
        wait_until(lambda: rig.equal("items", ["id"]), 60, "the resync to copy every row")
        wait_until(lambda: rig.query("a", "select status, signalled from sync.backfill_runs")
                   == [("finished", 500)], 30, "the resync run to be recorded as finished")
        # finished = every key signalled, not applied; and the first scheduled check may
        # have repaired (and so equalled) the tables before the resync began. Signals still
        # queued would overwrite the drift below with a's rows, and no check would find it
        rig.wait_drained()
        with psycopg.connect(rig.dsn["b"], autocommit=True) as c:
            c.execute("update items set v = 'drift' where id <= 5")
        found = ("select id from sync.check_runs where name = 'items' and verdict = 'different' "
                 "and different = 5 and repaired_at is not null")
        wait_until(lambda: rig.query("a", found) != [], 60,
                   "the bridge's scheduled check to find and repair the drift", 0.2)
        wait_until(lambda: rig.equal("items", ["id"]), 60, "the repair to land")
        [(run_id,)] = rig.query("a", found)
        logged = re.findall(r"event=check link=items verdict=(\w+) run=(\d+)", rig.log_text())
        assert ("different", str(run_id)) in logged, logged
        assert rig.query("a", "select count(*) from sync.check_diffs where run_id = %s",
                         (run_id,)) == [(5,)]
        # and it keeps checking on its schedule: a later run finds the tables equal
        wait_until(lambda: rig.query("a", "select verdict from sync.check_status "
                                          "where name = 'items'") == [("equal",)], 60,
                   "a later scheduled check to find the tables equal", 0.2)
        assert rig.proc.poll() is None
    finally:
        rig.close()
