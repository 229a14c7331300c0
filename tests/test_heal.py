"""Every fault heals in the running bridge (issue 13), and how long it takes.

Each fault is injected for real, three times against one running bridge
process (never restarted), and the time from "the database is reachable
again" (or from the fault, for faults that leave it reachable) to a fresh
row applied on the sink is measured; the median is printed and asserted
against the issue's 2 s with a margin for two shared cores:

    pytest -s tests/test_heal.py | grep '^heal'
"""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from heal_support import (
    GONE_WITHIN,
    Clusters,
    Proxy,
    Writer,
    arrives,
    crash_restart,
    flowing,
    hub_now,
    make,
    report,
    state,
    state_after,
    status,
    until,
)

TARGET = 2.0  # s: flowing again within 2 s of the database being reachable
MARGIN = 2.0  # two cores shared with other work
ROUNDS = 3


@pytest.fixture(scope="module")
def clusters():
    c = Clusters()
    yield c
    c.destroy()


def _terminate(rig, side: str, app: str) -> int:
    return len(rig.query(side, "select pg_terminate_backend(pid) from pg_stat_activity "
                               "where application_name = %s and pid <> pg_backend_pid()",
                         (app,)))


def _converged(rig) -> None:
    rig.wait_equal({"items": ["id"]}, 60)
    rig.wait_drained(30)
    assert rig.query("a", "select count(*) from sync.queue where op = 'K'") == [(0,)], \
        "no taken batch may be left behind"
    # the writer's keys are inserted once each: each must be applied exactly once
    assert rig.query("b", "select count(*) from (select id from applies where id >= 1000000 "
                          "group by id having count(*) > 1) twice") == [(0,)], \
        "a batch was applied twice after the fault"


def _assert_heal(fault: str, times: list[float]) -> None:
    med = report(fault, times)
    assert med < TARGET + MARGIN, f"{fault}: median heal {med:.2f}s"


def test_failed_apply_is_retried_as_the_same_batch(clusters, tmp_path):
    """Was: the retry claimed a *new* batch and the failed one stayed claimed until a
    restart. The sink fails the first three applies with a transient error."""
    rig = make(clusters, tmp_path)
    rig.execute("b", """
        create sequence fail_first;
        create function fail_first() returns trigger language plpgsql as $$
        begin
            if nextval('fail_first') <= 3 then  -- a sequence: not undone by the rollback
                raise exception 'injected' using errcode = '40001';
            end if;
            return null;
        end $$;
        create trigger fail_first after insert on items
            for each statement execute function fail_first();""")
    # the id of every signal queued for the link, as capture writes it
    rig.execute("a", """
        create table public.signals (id bigint not null);
        create function public.log_signal() returns trigger language plpgsql as $$
        begin
            insert into public.signals values (new.id);
            return null;
        end $$;
        create trigger log_signal after insert on sync.queue for each row
            when (new.op = 'K') execute function public.log_signal();""")
    try:
        rig.start_bridge()
        rig.execute("a", "insert into items values (1, 'x')")
        until(lambda: rig.query("b", "select count(*) from items")[0][0] == 1, 60,
              "the row, applied by the running bridge")
        [(signal,)] = rig.query("a", "select id from public.signals")
        assert rig.query("b", "select queue_ids::text from sync.applied_batches") == [
            (f"{{[{signal},{signal + 1})}}",)], \
            "the signal whose batch failed is the one applied, by one batch"
        assert rig.query("b", "select last_value from fail_first")[0][0] >= 4
        _converged(rig)
        assert status(rig)["retries"] >= 3 and status(rig)["last_error"] is None
    finally:
        rig.close()


def test_sink_crash_restart_under_writes(clusters, tmp_path):
    rig = make(clusters, tmp_path)
    try:
        rig.start_bridge()
        arrives(rig, 1)
        times = []
        with Writer(rig.dsn["a"]) as writer:
            for i in range(ROUNDS):
                writer.wrote()  # writes land before the crash (was a 0.5 s sleep)
                crash_restart(clusters.sink, down=1.0)
                times.append(flowing(rig))  # the writer keeps signals coming
                arrives(rig, 10 + i)
        _converged(rig)
        _assert_heal("sink pg_ctl -m immediate restart under writes", times)
        assert rig.proc.poll() is None, "healed by the running bridge"
    finally:
        rig.close()


def test_hub_crash_restart(clusters, tmp_path):
    rig = make(clusters, tmp_path)
    try:
        rig.start_bridge()
        arrives(rig, 1)
        times = []
        with Writer(rig.dsn["a"]) as writer:
            for i in range(ROUNDS):
                writer.wrote()
                crash_restart(clusters.hub, down=1.0)
                times.append(flowing(rig))  # the writer keeps signals coming
                arrives(rig, 10 + i)
        _converged(rig)
        _assert_heal("hub (source) pg_ctl -m immediate restart", times)
        assert rig.proc.poll() is None
    finally:
        rig.close()


def test_listen_backend_terminated(clusters, tmp_path):
    """Was: ~5 s to notice (the next ping). The fallback poll is 30 s here, so only
    a re-established LISTEN (and its catch-up) brings the row over quickly."""
    rig = make(clusters, tmp_path, {"fallback_poll": 30.0})
    try:
        rig.start_bridge()
        until(lambda: _listening(rig), 60, "LISTEN")  # the bridge's start, too
        arrives(rig, 1)
        times = []
        for i in range(ROUNDS):
            until(lambda: _listening(rig), 15, "LISTEN")
            assert _terminate(rig, "a", "syncbridge-listen") == 1
            times.append(arrives(rig, 10 + i))
        _assert_heal("pg_terminate_backend of LISTEN", times)
    finally:
        rig.close()


def _listening(rig) -> bool:
    return rig.query("a", "select count(*) from pg_stat_activity "
                          "where application_name = 'syncbridge-listen'")[0][0] == 1


def test_drain_connections_terminated(clusters, tmp_path):
    rig = make(clusters, tmp_path)
    try:
        rig.start_bridge()
        arrives(rig, 1)
        times = []
        for i in range(ROUNDS):
            side = "b" if i % 2 == 0 else "a"  # sink pool, then source pool
            assert _terminate(rig, side, "syncbridge") >= 1
            times.append(arrives(rig, 10 + i))
        _assert_heal("pg_terminate_backend of drain connections", times)
        until(lambda: status(rig)["last_error"] is None, 30, "last_error cleared")
    finally:
        rig.close()


def test_leadership_blip(clusters, tmp_path):
    """Was: drain loops got up to 20 s to notice a stop flag a lost leadership never set."""
    rig = make(clusters, tmp_path)
    try:
        rig.start_bridge()
        arrives(rig, 1)
        times = []
        for i in range(ROUNDS):
            until(lambda: rig.query("a", "select count(*) from pg_stat_activity where "
                                         "application_name = 'syncbridge-leader'")[0][0] == 1,
                  15, "the leader connection")
            assert _terminate(rig, "a", "syncbridge-leader") == 1
            times.append(arrives(rig, 10 + i))
        _assert_heal("leadership blip (lock session terminated)", times)
        assert "event=leadership_lost" in rig.log_text()
    finally:
        rig.close()


def test_sigstop_longer_than_the_heartbeat(clusters, tmp_path):
    rig = make(clusters, tmp_path)
    try:
        proc = rig.start_bridge()
        arrives(rig, 1)
        times, gone = [], []
        for i in range(ROUNDS):
            until(lambda: state(rig) == "idle", 30, "idle")
            proc.send_signal(signal.SIGSTOP)
            stopped = hub_now(rig)
            try:  # the bound is the feature: read by the hub's clock, not our polling
                shown, took = state_after(rig, stopped, GONE_WITHIN, "no bridge")
                assert shown == "no bridge", f"{GONE_WITHIN}s after SIGSTOP: {shown!r}"
                gone.append(took)
            finally:
                proc.send_signal(signal.SIGCONT)
            cont = time.monotonic()
            arrives(rig, 10 + i)
            until(lambda: state(rig) == "idle", 30, "idle after SIGCONT")
            times.append(time.monotonic() - cont)
        report("SIGSTOP shown as 'no bridge'", gone)
        _assert_heal("SIGSTOP of the bridge, then SIGCONT", times)
    finally:
        rig.close()


def test_proxy_drops_and_stalls_the_sink_connections(clusters, tmp_path):
    rig = make(clusters, tmp_path, {"stall_after": 2.0})
    proxy = Proxy(clusters.sink.port)
    try:  # the bridge reaches the sink through the proxy; the test reads it directly
        rig.config_path.write_text(rig.config_path.read_text().replace(
            f'"{rig.dsn["b"]}"', f'"{proxy.dsn(rig.dsn["b"])}"'))
        rig.start_bridge()
        arrives(rig, 1)
        drops = []
        for i in range(ROUNDS):
            proxy.drop()
            drops.append(arrives(rig, 10 + i))
        _assert_heal("proxy drops every sink connection (RST)", drops)
        stalls = []
        for i in range(ROUNDS):
            until(lambda: state(rig) == "idle", 30, "idle")
            proxy.stall()
            try:
                rig.execute("a", "insert into items values (%s, 'stalled')", (100 + i,))
                until(lambda: state(rig) == "stalled", 30, "stalled")  # stall_after 2 s
            finally:
                proxy.resume()
            resumed = time.monotonic()
            until(lambda k=100 + i: rig.query("b", "select count(*) from items where id = %s",
                                              (k,))[0][0] == 1, 30, "the stalled row")
            stalls.append(time.monotonic() - resumed)
        _assert_heal("proxy stalls the sink connections, then resumes", stalls)
        _converged(rig)
    finally:
        proxy.close()
        rig.close()


def test_a_listen_connection_over_a_unix_socket_takes_no_tcp_keepalive():
    """A DSN with host=/run/postgresql reaches the server over a Unix socket, which has
    no TCP keepalive: setting one raised EOPNOTSUPP, and the bridge never LISTENed (it
    logged listen_lost and waited for fallback_poll). A real AF_UNIX socket, as asyncpg's
    transport hands it over, must pass untouched; a TCP one gets its keepalives."""
    import socket
    from types import SimpleNamespace

    from syncbridge.bridge.listening import _keepalive

    def conn_of(sock: socket.socket) -> SimpleNamespace:
        return SimpleNamespace(_transport=SimpleNamespace(get_extra_info=lambda _k: sock))

    left, right = socket.socketpair(socket.AF_UNIX)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        _keepalive(conn_of(left))
        _keepalive(conn_of(tcp))
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    finally:
        for s in (left, right, tcp):
            s.close()


@pytest.mark.parametrize("point", ["after_sink_commit", "after_source_commit"])
def test_a_sink_crash_right_after_a_batch_loses_nothing_and_applies_nothing_twice(
        clusters, tmp_path, point):
    """In a backlog a one-way batch's sink commit does not wait for its WAL flush
    (drain.py: the next batch is taken ahead); its source commit, which deletes its
    signals, waits until the sink's flush covers it. The sink's WAL writer is slowed
    here (10 s) so that an unflushed commit is really lost by `pg_ctl -m immediate`. The
    bridge is killed at the point in the first batch of a backlog, then the sink
    crashes: after the sink commit the batch may be lost with its record, and its
    signals (given back) bring it again; after the source commit every key whose signal
    is gone must be on the sink, flushed. Was (the source committing first): those rows
    gone for good."""
    rows = 30
    rig = make(clusters, tmp_path, {"batch_size": 10})

    def configure(*settings: str) -> None:
        with psycopg.connect(clusters.sink.dsn(), autocommit=True) as c:
            for setting in settings:
                c.execute(f"alter system {setting}")
            c.execute("select pg_reload_conf()")

    try:
        configure("set wal_writer_delay = '10s'", "set bgwriter_lru_maxpages = 0")
        rig.execute("a", f"insert into items select g, 'v' || g from generate_series(1, {rows}) g")
        first = rig.start_bridge({"SYNCBRIDGE_FAULT": f"{point}:1"})
        assert first.wait(60) == -signal.SIGKILL
        crash_restart(clusters.sink)
        on_sink = {k for (k,) in rig.query("b", "select id from items")}
        queued = {int(k) for (k,) in rig.query(
            "a", "select key->>'id' from sync.queue where op = 'K'")}
        assert on_sink | queued == set(range(1, rows + 1)), \
            "the source deleted the signals of rows the sink lost"
        if point == "after_source_commit":
            assert len(queued) < rows, "the first batch's source commit happened"
        else:
            assert len(queued) == rows, "the signals are given back when the bridge dies first"
        rig.start_bridge()
        rig.wait_equal({"items": ["id"]}, 60)
        rig.wait_drained(30)
        assert rig.query("b", "select count(*), count(distinct id) from applies") == [
            (rows, rows)], "each row applied once"
        assert rig.query("b", "select sum(signals) from sync.applied_batches") == [(rows,)]
    finally:
        configure("reset wal_writer_delay", "reset bgwriter_lru_maxpages")
        rig.close()
