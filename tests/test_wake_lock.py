"""The wake lock: writers notify only while the bridge sleeps on LISTEN.

A NOTIFY holds its writer's commit behind every other notifying commit (a
database-wide lock through the WAL flush), so writers notify only while the
bridge holds its link side's wake lock on its LISTEN connection. A writer that
found the lock free keeps it shared to its commit, and the bridge may not sleep
before that commit is visible. Each test would see a row stranded until the
fallback poll (60 s here) if the bridge slept without the lock, or armed past an
open writer.
"""

from __future__ import annotations

import time

import psycopg

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.postgres.capture import wake_lock

SCHEMA = "create table items (id int primary key, v text not null);"
FALLBACK = {"fallback_poll": 60.0}


def _holders(rig, mode: str) -> list[str]:
    """application_name of every backend holding the items:a wake lock in `mode`, in this
    database (pg_locks shows the whole cluster's: other tests' bridges lock the same keys)."""
    cls, key = wake_lock("items", "a")
    return [r[0] for r in rig.query(
        "a", "select coalesce(a.application_name, '') from pg_locks l "
             "join pg_stat_activity a on a.pid = l.pid "
             "where l.locktype = 'advisory' and l.classid::bigint = %s::bigint & 4294967295 "
             "and l.objid::bigint = %s::bigint & 4294967295 and l.objsubid = 2 "
             "and l.granted and l.mode = %s and l.database = (select oid from pg_database "
             "where datname = current_database())", (cls, key, mode))]


def _armed(rig) -> bool:
    return _holders(rig, "ExclusiveLock") == ["syncbridge-listen"]


def _arrives(rig, key: int, within: float = 20.0) -> None:
    start = time.monotonic()
    wait_until(lambda: rig.query("b", "select count(*) from items where id = %s",
                                 (key,))[0][0] == 1, within, f"row {key} on the sink")
    assert time.monotonic() - start < within, "only a poll or a NOTIFY explains it before 60 s"


def test_a_writer_open_while_the_bridge_would_sleep_is_drained_without_a_notify(new_db, tmp_path):
    """The writer's trigger ran before any bridge held the lock: it took the lock
    shared and will not notify. The bridge, finding nothing committed, cannot take the
    lock and polls; the row arrives soon after the commit, then the bridge sleeps armed."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings=FALLBACK)
    try:
        with psycopg.connect(rig.dsn["a"]) as writer:
            writer.execute("insert into items values (1, 'open across the arm')")
            assert _holders(rig, "ShareLock") == [""]  # took it shared: no NOTIFY at commit
            rig.start_bridge()
            # the bridge looks, finds nothing committed and keeps looking: the lock is not
            # its own while the writer holds it
            wait_until(lambda: "event=active" in rig.log_text(), 30, "the bridge to lead")
            wait_until(lambda: rig.query("a", "select count(*) from pg_stat_activity where "
                                              "application_name = 'syncbridge-listen' "
                                              "and datname = current_database()")[0][0] == 1,
                       30, "the LISTEN connection")
            assert not _armed(rig)
            writer.commit()
        _arrives(rig, 1)
        wait_until(lambda: _armed(rig), 20, "the bridge to sleep with the wake lock")
        rig.execute("a", "insert into items values (2, 'notified')")  # armed: this one notifies
        _arrives(rig, 2)
    finally:
        rig.close()


def test_flowing_rows_let_the_lock_go_and_an_open_writer_holds_off_the_sleep(new_db, tmp_path):
    """With a one-row threshold every drained burst lets the lock go until the next empty
    look. Writers keep committing rows until one finds the lock free (it takes it shared:
    no NOTIFY) and stays open: the bridge must not take the lock, so it polls, and the
    row arrives soon after that writer commits."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings=FALLBACK)
    try:
        rig.start_bridge({"SYNCBRIDGE_DISARM_WAKES": "1"})
        rig.execute("a", "insert into items values (0, 'first')")
        _arrives(rig, 0, 30)
        wait_until(lambda: _armed(rig), 20, "the bridge to sleep with the wake lock")
        with psycopg.connect(rig.dsn["a"]) as writer:
            deadline, key = time.monotonic() + 30, 0
            while True:
                key += 1
                writer.execute("insert into items values (%s, 'flowing')", (key,))
                if _holders(rig, "ShareLock") == [""]:
                    break  # this writer found the lock free and will not notify
                writer.commit()  # it notifies: the bridge wakes, drains and lets go
                assert time.monotonic() < deadline, "no writer ever found the lock free"
            wait_until(lambda: rig.query("b", "select count(*) from items")[0][0] == key, 20,
                       "every committed row")
            assert not _armed(rig)  # the open writer holds it shared
            writer.commit()
        _arrives(rig, key)
        wait_until(lambda: _armed(rig), 20, "the bridge to sleep with the wake lock")
        assert rig.query("b", "select count(*) from items") == [(key + 1,)]
    finally:
        rig.close()
