"""sync.status is true at the moment it is read (issue 13).

Real clusters, real `syncbridge run` processes. Each test names the lie it
catches: queued 0 with rows queued, a dead bridge listed active, an outage
without a state, last_error kept after recovery, deferrals not counted, a
standby that cannot take over from a stopped bridge, a pause that is ignored.
"""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from heal_support import (
    GONE_WITHIN,
    Clusters,
    arrives,
    hub_now,
    make,
    state,
    state_after,
    status,
    until,
)
from rigs import EVENTUALLY, link, make_rig
from syncbridge.bridge.bench.native import STATEMENT_LINE, Server
from syncbridge.bridge.bench.rig import wait_until


@pytest.fixture(scope="module")
def clusters():
    c = Clusters()
    yield c
    c.destroy()


def test_stopped_bridge_shows_no_bridge_and_the_real_queue(clusters, tmp_path):
    """Was: queued 0 and the bridge `active` long after it was SIGKILLed."""
    rig = make(clusters, tmp_path)
    try:
        proc = rig.start_bridge()
        arrives(rig, 1, timeout=60)
        until(lambda: state(rig) == "idle", EVENTUALLY, "idle")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = hub_now(rig)  # no beat can follow: the process is reaped
        rig.execute("a", "insert into items select g, 'q' from generate_series(100, 199) g")
        s = status(rig)
        assert s["queued"] == 100, "queued must be counted from the queue when it is read"
        assert s["lag"] is not None and s["stale"] is False
        shown, took = state_after(rig, killed, GONE_WITHIN, "no bridge")
        print(f"gone: SIGKILLed bridge shown 'no bridge' after {took}s (hub clock)")
        assert shown == "no bridge", f"{GONE_WITHIN}s after SIGKILL the state is {shown!r}"
        assert rig.query("a", "select count(*) from sync.status where bridges is not null") \
            == [(0,)], "a dead bridge is not listed as running"
    finally:
        rig.close()


def test_clean_stop_is_gone_at_once(clusters, tmp_path):
    rig = make(clusters, tmp_path)
    try:
        proc = rig.start_bridge()
        until(lambda: state(rig) == "idle", 60, "idle")  # the bridge's start, too
        assert rig.stop_bridge() == 0
        assert rig.query("a", "select count(*) from sync.bridges where pid = %s",
                         (proc.pid,)) == [(0,)]
        assert state(rig) == "no bridge"
    finally:
        rig.close()


def test_sink_outage_says_waiting_for_sink_then_clears_and_logs_recovered(clusters, tmp_path):
    """Was: queued 0 and no error during a sink outage; last_error kept afterwards."""
    rig = make(clusters, tmp_path)
    try:
        rig.start_bridge()
        arrives(rig, 1, timeout=60)
        clusters.sink.stop("immediate")
        try:
            rig.execute("a", "insert into items values (2, 'during the outage')")
            # the bug was never saying it: how soon depends on the bridge's retry, which
            # a loaded machine slows down, so this waits as long as "eventually"
            took = until(lambda: state(rig) == "waiting for sink", EVENTUALLY,
                         "waiting for sink")
            print(f"state: 'waiting for sink' {took:.2f}s after the write")
            s = status(rig)
            assert s["queued"] >= 1 and s["last_error"] and s["retries"] > 0
        finally:
            clusters.sink.start()
            back = time.monotonic()
        until(lambda: rig.query("b", "select count(*) from items where id = 2")[0][0] == 1,
              30, "the row written during the outage")
        flowing = time.monotonic() - back
        until(lambda: state(rig) == "idle", EVENTUALLY, "idle again")
        s = status(rig)
        assert s["last_error"] is None and s["failing_since"] is None
        assert rig.log_text().count("event=recovered target=items:a->b") == 1
        print(f"heal: sink back -> row applied after {flowing:.2f}s")
    finally:
        rig.close()


def test_deferred_rows_count_as_retries(new_db, tmp_path):
    """Was: `retries` stayed 0 while the log showed row_deferred."""
    schema = ("create table parent (id int primary key);"
              "create table child (id int primary key, parent_id int references parent);")
    rig = make_rig(new_db, tmp_path, schema + "insert into parent values (1);", [
        link("child", "child", ["id"], "a_to_b"),
        link("parent", "parent", ["id"], "a_to_b"),
    ], settings={"max_attempts": 1}, schema_b=schema)
    try:
        rig.start_bridge()
        rig.execute("a", "insert into child values (10, 1)")
        # max_attempts 1: deferred exactly once, then dead-lettered, so the count is
        # final once the dead letter is there (was: polled for a passing value of 1)
        wait_until(lambda: rig.query("a", "select count(*) from sync.dead_letter "
                                          "where link = 'child'") == [(1,)], 60,
                   "the child to be deferred once, then dead-lettered")
        assert rig.log_text().count("event=row_deferred") == 1
        wait_until(lambda: rig.query("a", "select retries from sync.status "
                                          "where link = 'child'") == [(1,)], EVENTUALLY,
                   "the deferral counted in sync.status.retries")
    finally:
        rig.close()


def test_pause_stops_draining_and_resume_restarts_it_without_a_restart(clusters, tmp_path):
    rig = make(clusters, tmp_path)
    try:
        proc = rig.start_bridge()
        arrives(rig, 1, timeout=60)
        rig.execute("a", "select sync.pause('items', 'schema changed on b')")
        until(lambda: state(rig) == "paused: schema changed on b", 10, "the paused state")
        # the bridge has taken the pause (its control loop logs it as it does): a write
        # from now on is held; was a fixed 1.5 s sleep for the bridge's reaction time
        wait_until(lambda: "event=paused link=items" in rig.log_text(), EVENTUALLY,
                   "the bridge to take the pause")
        rig.execute("a", "insert into items values (2, 'while paused')")
        with pytest.raises(TimeoutError):  # three fallback polls (1 s) would have taken it
            until(lambda: rig.query("b", "select count(*) from items where id = 2")[0][0],
                  3, "nothing while paused")
        assert status(rig)["queued"] == 1
        rig.execute("a", "select sync.resume('items')")
        took = until(lambda: rig.query("b", "select count(*) from items where id = 2")[0][0]
                     == 1, EVENTUALLY, "the row after resume")
        print(f"resume: queued row applied {took:.2f}s after sync.resume")
        assert proc.poll() is None, "resumed by the running bridge, not by a restart"
        assert "event=resumed link=items" in rig.log_text()
        until(lambda: state(rig) == "idle", EVENTUALLY, "idle")
    finally:
        rig.close()


def test_canary_gives_end_to_end_lag_and_stalled_when_blocked(clusters, tmp_path):
    rig = make(clusters, tmp_path, {"canary_interval": 0.5, "stall_after": 2.0})
    try:
        rig.start_bridge()
        until(lambda: status(rig).get("canary_lag") is not None, 60, "a canary to arrive")
        first = status(rig)["canary_applied_at"]
        # a quiet direction sends no canaries (an idle bridge sends nothing to its peers)
        # and an idle link is never taken for stalled
        until(lambda: state(rig) == "idle", EVENTUALLY, "idle")
        idle_since = status(rig)["canary_applied_at"]
        shown, _ = state_after(rig, hub_now(rig), 2.5, "idle")  # longer than stall_after
        assert shown == "idle", f"an idle link shown {shown!r}"
        assert status(rig)["canary_applied_at"] == idle_since, "a canary while idle"
        assert status(rig)["canary_lag"].total_seconds() < 5
        assert rig.query("b", "select count(*) from sync.canary") == [(1,)]
        # traffic: canaries measure its end-to-end lag again
        rig.execute("a", "insert into items values (4, 'traffic')")
        until(lambda: status(rig)["canary_applied_at"] > max(first, idle_since), EVENTUALLY,
              "a canary of the busy direction")
        # block the sink: the batch in flight waits on the lock, so nothing arrives
        with psycopg.connect(rig.dsn["b"]) as blocker:
            blocker.execute("lock table items in access exclusive mode")
            rig.execute("a", "insert into items values (5, 'blocked')")
            took = until(lambda: state(rig) == "stalled", EVENTUALLY, "stalled")
            print(f"state: 'stalled' {took:.2f}s after the write (stall_after 2 s)")
            blocker.rollback()
        until(lambda: state(rig) == "idle", EVENTUALLY, "idle after the lock is released")
    finally:
        rig.close()


def test_standby_takes_over_from_a_stopped_bridge(clusters, tmp_path):
    """SIGSTOP keeps the session (and the advisory lock) of the active bridge alive:
    was, the standby waited forever and sync.bridges listed the stopped one active."""
    rig = make(clusters, tmp_path)
    try:
        first = rig.start_bridge()
        until(lambda: rig.query("a", "select role from sync.bridges where pid = %s",
                                (first.pid,)) == [("active",)], 60, "first active")
        second = rig.start_bridge()
        until(lambda: rig.query("a", "select role from sync.bridges where pid = %s",
                                (second.pid,)) == [("standby",)], 60, "second standby")
        first.send_signal(signal.SIGSTOP)
        try:
            rig.execute("a", "insert into items values (7, 'after the stop')")
            # was: never; the fencing waits two missed beats, then the standby leads
            took = until(lambda: rig.query("b", "select count(*) from items where id = 7")
                         [0][0] == 1, EVENTUALLY, "the standby to apply the row")
            print(f"takeover: standby applied a row {took:.2f}s after SIGSTOP of the active")
            assert rig.query("a", "select role from sync.bridges where pid = %s",
                             (second.pid,)) == [("active",)]
        finally:
            first.send_signal(signal.SIGCONT)
        # the old leader wakes up, finds its session gone, and becomes a standby
        until(lambda: rig.query("a", "select role from sync.bridges where pid = %s",
                                (first.pid,)) == [("standby",)], EVENTUALLY,
              "first back as standby")
        arrives(rig, 8)
        assert first.poll() is None and second.poll() is None
    finally:
        rig.close()


def test_an_error_left_by_a_dead_bridge_is_cleared_by_the_next_one(clusters, tmp_path):
    """A bridge killed while failing leaves last_error; the next one clears it once it
    works, instead of showing `failing` forever on an idle link."""
    rig = make(clusters, tmp_path)
    try:
        proc = rig.start_bridge()
        until(lambda: state(rig) == "idle", 60, "idle")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        rig.execute("a", "update sync.link_state set last_error = 'old failure', "
                         "failing_since = clock_timestamp()")
        rig.start_bridge()
        until(lambda: state(rig) == "idle", 60, "idle, the old error cleared")
        assert status(rig)["last_error"] is None
    finally:
        rig.close()


def test_migration_0007_rolls_back_and_applies_again(new_db, tmp_path):
    from syncbridge.engine.migrate import migrate

    rig = make_rig(new_db, tmp_path, "create table items (id int primary key, v text);",
                   [link("items", "items", ["id"], "a_to_b")])
    rig.execute("a", "select sync.pause('items', 'x')")
    migrate(rig.config, rollback=True)
    assert rig.query("a", "select count(*) from pg_namespace n join pg_class c "
                          "on c.relnamespace = n.oid where n.nspname = 'sync'") == [(0,)]
    migrate(rig.config)
    assert rig.query("a", "select state from sync.status") == []


def test_an_idle_bridge_sends_its_peers_nothing_but_its_heartbeat(clusters, tmp_path):
    """Idle means idle: no polls, pings, samples or canaries on the wire, counted in the
    servers' own logs (log_statement = all) over 10 s. The hub gets one heartbeat per
    interval, and that statement also keeps the quiet direction's sample fresh."""
    rig = make(clusters, tmp_path, {"fallback_poll": 300.0})
    servers = {"a": Server(clusters.hub.dsn(), clusters.hub.data / "server.log"),
               "b": Server(clusters.sink.dsn(), clusters.sink.data / "server.log")}
    dbs = {side: rig.dsn[side].rsplit("/", 1)[1] for side in "ab"}
    try:
        rig.start_bridge()
        rig.execute("a", "insert into items values (1, 'before the idle window')")
        arrives(rig, 1)
        until(lambda: state(rig) == "idle", 15, "idle")
        for s in servers.values():
            s.set_statement_log(True)
        try:
            # the window opens at the first heartbeat that vouches for the quiet direction
            until(lambda: any('"link": "items"' in t for t in _statements(
                servers["a"], 0, dbs["a"]) if "insert into sync.bridges" in t), 15,
                  "a heartbeat vouching for the idle direction")
            start = {side: s.log_size() for side, s in servers.items()}
            time.sleep(10)  # the measured window itself
            logged = {side: _statements(s, start[side], dbs[side])
                      for side, s in servers.items()}
        finally:
            for s in servers.values():
                s.set_statement_log(False)
        assert logged["b"] == [], logged["b"]
        assert logged["a"], "nothing logged: is log_statement on?"
        beats = [t for t in logged["a"] if "insert into sync.bridges" in t]
        assert len(beats) == len(logged["a"]), [t for t in logged["a"] if t not in beats]
        assert 3 <= len(beats) <= 7, len(beats)  # heartbeat_interval 2 s over 10 s
        assert state(rig) == "idle" and status(rig)["sampled_ago"] is None  # live: hub queue
        rig.execute("a", "insert into items values (2, 'after the idle window')")
        arrives(rig, 2)
    finally:
        rig.close()


def _statements(server: Server, offset: int, database: str) -> list[str]:
    """The statements the server logged for one database since offset."""
    with open(server.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    starts = list(STATEMENT_LINE.finditer(text))
    ends = [m.start() for m in starts[1:]] + [len(text)] if starts else []
    return [text[m.end():end] for m, end in zip(starts, ends, strict=True)
            if m.group(1) == database]
