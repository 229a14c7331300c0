"""The bridge's background task: scheduled checks with auto repair, and sync.resync()."""

from __future__ import annotations

import asyncio

import psycopg

from rigs import link
from syncbridge.bridge.rig import Rig, wait_until
from syncbridge.engine import reconcile

SCHEMA = "create table items (id int primary key, v text);"


def test_scheduled_check_repairs_and_resync_backfills(new_db, tmp_path):
    rig = Rig(tmp_path, new_db("a"), new_db("b"),
              [link("items", "items", ["id"], "a_to_b", check_every="1s", repair="auto")])
    try:
        for side in ("a", "b"):
            rig.execute(side, SCHEMA)
        rig.execute("a", "insert into items select g, 'v' || g from generate_series(1, 500) g")
        rig.setup()
        rig.start_bridge()
        assert reconcile.schedules(rig.config) == {"items": (1.0, True)}
        rig.execute("a", "select sync.resync('items')")

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(reconcile.background_checks(rig.config, stop))
            await asyncio.to_thread(wait_until, lambda: rig.equal("items", ["id"]), 60,
                                    "the resync to copy every row")
            with psycopg.connect(rig.dsn["b"], autocommit=True) as c:
                c.execute("update items set v = 'drift' where id <= 5")
            await asyncio.to_thread(
                wait_until, lambda: rig.query("a", "select count(*) from sync.check_runs "
                                                   "where verdict = 'different' and "
                                                   "repaired_at is not null")[0][0] > 0,
                60, "an automatic check to find and repair the drift", 0.2)
            await asyncio.to_thread(wait_until, lambda: rig.equal("items", ["id"]), 60,
                                    "the repair to land")
            stop.set()
            await asyncio.wait_for(task, 30)

        asyncio.run(main())
        assert rig.query("a", "select status, signalled from sync.backfill_runs") == [
            ("finished", 500)]
    finally:
        rig.close()
