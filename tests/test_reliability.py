"""Poison rows, dead letters, standby takeover, clean shutdown, reconnects."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from rigs import CLAIM_LOG, TRANSPORTS, link, make_rig
from syncbridge.bridge.bench.rig import wait_until

SCHEMA = "create table items (id int primary key, v text not null);"


@pytest.mark.parametrize("env", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_poison_row_is_isolated_dead_lettered_and_retried(new_db, tmp_path, env):
    """Staged or not, a row the sink rejects is isolated on the item path in the same
    batch's sink transaction."""
    sink = SCHEMA + "alter table items add constraint no_bad_values check (v <> 'bad');"
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   schema_b=sink)
    try:
        rig.start_bridge(env)
        rig.execute("a", "insert into items select g, case when g = 500 then 'bad' else 'ok' end "
                         "from generate_series(1, 1000) g")
        wait_until(lambda: rig.query("b", "select count(*) from items")[0][0] == 999, 60,
                   "the 999 good rows")  # the bridge's start, too
        rig.wait_drained()
        dead = rig.query("a", "select link, source_side, key, error, status from sync.dead_letter")
        assert len(dead) == 1
        assert dead[0][:3] == ("items", "a", {"id": 500})
        assert "no_bad_values" in dead[0][3] and dead[0][4] == "open"
        # one batch, not a row-by-row replay
        batches = rig.query("b", "select count(*), sum(upserts) from sync.applied_batches")
        assert batches == [(1, 999)]
        staged = env["SYNCBRIDGE_STAGE_FROM"] == "1"
        assert ("event=staged_batch_isolating" in rig.log_text()) == staged
        wait_until(lambda: rig.query("a", "select dead_letters from sync.status")[0][0] == 1, 30,
                   "sync.status to count the dead letter")
        rig.execute("b", "alter table items drop constraint no_bad_values")
        assert rig.query("a", "select sync.retry_dead('items')") == [(1,)]
        rig.wait_equal({"items": ["id"]})
        wait_until(lambda: rig.query("a", "select status from sync.dead_letter")[0][0] == "closed",
                   30, "the dead letter to close")
    finally:
        rig.close()


def test_fk_violation_is_deferred_until_the_parent_arrives(new_db, tmp_path):
    schema = ("create table parent (id int primary key);"
              "create table child (id int primary key, parent_id int references parent);")
    # parent 1 exists on a before capture is installed, so no signal carries it to b
    rig = make_rig(new_db, tmp_path, schema + "insert into parent values (1);", [
        link("child", "child", ["id"], "a_to_b"),
        link("parent", "parent", ["id"], "a_to_b"),
    ], schema_b=schema)
    try:
        rig.start_bridge()
        rig.execute("a", "insert into child values (10, 1)")
        wait_until(lambda: "event=row_deferred" in rig.log_text(), 30, "the child to be deferred")
        assert rig.query("b", "select count(*) from child") == [(0,)]
        rig.execute("a", "update parent set id = id")  # now the parent is signalled
        rig.wait_equal({"parent": ["id"], "child": ["id"]})
        assert rig.query("a", "select count(*) from sync.dead_letter") == [(0,)]
    finally:
        rig.close()


def _role(rig, pid: int) -> str | None:
    rows = rig.query("a", "select role from sync.bridges where pid = %s", (pid,))
    return rows[0][0] if rows else None


def test_standby_takes_over_when_the_active_bridge_dies(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"])])
    try:
        first = rig.start_bridge()
        wait_until(lambda: _role(rig, first.pid) == "active", 60, "first bridge active")
        second = rig.start_bridge()
        wait_until(lambda: _role(rig, second.pid) == "standby", 60, "second bridge standby")
        wait_until(lambda: rig.query("a", "select count(*) from sync.status where bridges "
                                          "like %s and bridges like %s",
                                     (f"active %:{first.pid} %", f"%standby %:{second.pid} %"))
                   [0][0] > 0, 30, "both bridges in sync.status")
        rig.execute("a", "insert into items select g, 'x' from generate_series(1, 100) g")
        rig.wait_equal({"items": ["id"]})
        first.kill()
        first.wait(10)
        killed = time.monotonic()
        wait_until(lambda: _role(rig, second.pid) == "active", 30, "standby to take over")
        takeover = time.monotonic() - killed
        rig.execute("b", "insert into items select g, 'y' from generate_series(101, 200) g")
        rig.wait_equal({"items": ["id"]})
        print(f"takeover took {takeover:.2f}s")
        assert takeover < 10
    finally:
        rig.close()


def test_sigterm_during_a_batch_exits_zero_and_loses_nothing(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA,
                   [link("items", "items", ["id"], "a_to_b", batch_size=200)])
    try:
        rig.execute("a", "insert into items select g, 'v' from generate_series(1, 20000) g")
        rig.start_bridge()
        wait_until(lambda: rig.query("b", "select count(*) from sync.applied_batches")[0][0] > 0,
                   60, "the first batch")  # the bridge's start, too
        assert rig.stop_bridge(signal.SIGTERM, timeout=30) == 0
        assert "event=stopped" in rig.log_text()
        rig.start_bridge()
        rig.wait_equal({"items": ["id"]}, 60)
        rig.wait_drained()
        assert rig.query("b", "select sum(signals) from sync.applied_batches") == [(20000,)]
    finally:
        rig.close()


def test_terminated_listen_connection_is_replaced(new_db, tmp_path):
    """Only NOTIFY on the new LISTEN connection can explain a fast arrival: the
    fallback poll is 60 s, and the one wake-up the reconnect itself gives every
    drain is used up by the first row written after it."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings={"fallback_poll": 60.0})
    rig.execute("a", CLAIM_LOG)
    listeners = ("select count(*) from pg_stat_activity where application_name = "
                 "'syncbridge-listen' and datname = current_database()")
    try:
        rig.start_bridge()
        rig.execute("a", "insert into items values (1, 'before')")
        rig.wait_equal({"items": ["id"]})
        killed = rig.query("a", "select pg_terminate_backend(pid) from pg_stat_activity "
                                "where application_name = 'syncbridge-listen' "
                                "and datname = current_database()")
        assert killed == [(True,)]
        wait_until(lambda: "event=listen_lost" in rig.log_text(), 30, "the bridge to notice")
        wait_until(lambda: rig.query("a", listeners)[0][0] == 1, 30, "a new LISTEN connection")
        # row 2 may ride on the reconnect's wake-up of every drain (it may be written
        # before the new connection said LISTEN); after it the drain goes idle
        rig.execute("a", "insert into items values (2, 'after')")
        rig.wait_equal({"items": ["id"]}, 30)
        for i in (3, 4):
            _wait_idle_claim(rig)
            start = time.monotonic()
            rig.execute("a", "insert into items values (%s, 'notified')", (i,))
            rig.wait_equal({"items": ["id"]}, 20)
            assert time.monotonic() - start < 20, "only a NOTIFY explains arriving before 60 s"
        assert "event=listen_lost" in rig.log_text() and rig.proc.poll() is None
    finally:
        rig.close()


def _wait_idle_claim(rig) -> None:
    """Wait until the drain, after the last applied batch, claimed and found nothing:
    from then on it sleeps until a notify (or the fallback poll) wakes it."""
    [(applied,)] = rig.query("b", "select max(applied_at) from sync.applied_batches")
    wait_until(lambda: rig.queue_empty() and rig.query(
        "a", "select count(*) from claims where at > %s", (applied,))[0][0] > 0,
        20, "the drain to claim nothing and go idle")


def test_reconnects_after_the_database_restarts(pg_server, new_db, tmp_path):
    if pg_server.embedded is None:
        import pytest

        pytest.skip("restarting the server needs the embedded PostgreSQL, "
                    "not SYNC_TEST_PG_DSN")
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"])])
    try:
        rig.start_bridge()
        rig.execute("a", "insert into items select g, 'x' from generate_series(1, 100) g")
        rig.wait_equal({"items": ["id"]})
        pg_server.embedded.restart()
        restarted = time.monotonic()
        with psycopg.connect(rig.dsn["b"], autocommit=True) as c:
            c.execute("insert into items select g, 'y' from generate_series(101, 200) g")
        rig.wait_equal({"items": ["id"]}, 60)
        print(f"caught up {time.monotonic() - restarted:.2f}s after the restart")
        assert rig.proc.poll() is None, "the bridge must survive a server restart"
    finally:
        rig.close()
