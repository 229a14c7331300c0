"""Breaking the wake lock: paths where a committed change could wait for fallback_poll.

The wake lock (sql/postgres/capture.sql notify, bridge/listening.py, bridge/draining.py
_wake_lock): a writer notifies only while the bridge holds its link side's lock on the
LISTEN connection; a writer that found it free holds it shared to its commit, so the
bridge cannot go to sleep before that writer's rows are visible. Every test here runs
with fallback_poll = 60 s and expects a row within 20 s: only a NOTIFY or a poll the
bridge chose explains it, so each fails if the bridge slept without cause to wake.

Cases: a LISTEN session lost and not yet back (the loop must poll, and sync.status must
not vouch for the direction); savepoints released and rolled back (a subtransaction's
xact lock goes with it); REPEATABLE READ and SERIALIZABLE writers of many statements;
a prepared (two-phase) transaction holding the lock until COMMIT PREPARED; two-way links;
a notify = false link; reinstalling capture and a reload while the bridge runs.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import psycopg
import pytest

from heal_support import Proxy
from rigs import CLAIM_LOG, Rig, link, make_rig
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.embedded import EmbeddedPostgres
from syncbridge.engine.install import install, uninstall
from syncbridge.engine.postgres.capture import wake_lock

SCHEMA = "create table items (id int primary key, v text not null);"
FALLBACK = {"fallback_poll": 60.0}
WITHIN = 20.0  # seconds: far below the 60 s fallback poll, far above a NOTIFY or a poll

# A login event trigger (PostgreSQL 17+) that refuses the bridge's LISTEN connection
# only: the pools keep working and so does every other session, so the LISTEN session
# stays lost for as long as the test wants (a LISTEN-only outage: a connection limit
# reached by the application, a pooler or firewall that drops that one idle flow).
REFUSE_LISTEN = """
create function public.refuse_listen() returns event_trigger language plpgsql as $$
begin
    if current_setting('application_name') = 'syncbridge-listen' then
        raise exception 'the test refuses LISTEN sessions';
    end if;
end $$;
create event trigger refuse_listen on login execute function public.refuse_listen();
"""
ALLOW_LISTEN = ("drop event trigger if exists refuse_listen; "
                "drop function if exists public.refuse_listen()")
LISTENERS = ("select count(*) from pg_stat_activity where application_name = "
             "'syncbridge-listen' and datname = current_database()")


def _holders(rig: Rig, side: str, mode: str, link_name: str = "items") -> list[str]:
    """application_name of every session holding `side`'s wake lock of `link_name` in
    `mode` in that side's database ('(prepared)' for a prepared transaction)."""
    cls, key = wake_lock(link_name, side)
    return sorted(r[0] for r in rig.query(
        side, "select coalesce(a.application_name, case when l.pid is null "
              "then '(prepared)' end, '') from pg_locks l "
              "left join pg_stat_activity a on a.pid = l.pid "
              "where l.locktype = 'advisory' and l.classid::bigint = %s::bigint & 4294967295 "
              "and l.objid::bigint = %s::bigint & 4294967295 and l.objsubid = 2 "
              "and l.granted and l.mode = %s and l.database = (select oid from pg_database "
              "where datname = current_database())", (cls, key, mode)))


def _armed(rig: Rig, side: str = "a", link_name: str = "items") -> bool:
    return _holders(rig, side, "ExclusiveLock", link_name) == ["syncbridge-listen"]


def _count(rig: Rig, side: str, key: int, table: str = "items") -> int:
    return rig.query(side, f"select count(*) from {table} where id = %s", (key,))[0][0]


def _arrives(rig: Rig, key: int, side: str = "b", within: float = WITHIN,
             table: str = "items") -> None:
    """Row `key` is on `side` within `within` seconds (the fallback poll is 60 s)."""
    start = time.monotonic()
    wait_until(lambda: _count(rig, side, key, table) == 1, within, f"row {key} on {side}")
    assert time.monotonic() - start < within, "only a poll or a NOTIFY explains it before 60 s"


def _listening(rig: Rig, side: str = "a") -> None:
    wait_until(lambda: "event=active" in rig.log_text(), 60, "the bridge to lead")
    wait_until(lambda: rig.query(side, LISTENERS)[0][0] == 1, 60, "the LISTEN connection")


def _asleep_armed(rig: Rig, side: str = "a", first: int = 0) -> None:
    """Start the bridge, pass one row from `side`, and wait until it sleeps armed."""
    rig.start_bridge()
    rig.execute(side, "insert into items values (%s, 'first')", (first,))
    _arrives(rig, first, "b" if side == "a" else "a", 60)
    wait_until(lambda: _armed(rig, side), WITHIN, "the bridge to sleep with the wake lock")


def _asleep_long(rig: Rig, side: str) -> None:
    """Until the loop sleeps its fallback poll: armed, and no look at the queue for 2.5 s
    (while it polls, for a writer that did not notify or a depth not sampled yet, it
    looks at least every max_poll_interval, 1 s). Needs CLAIM_LOG on `side`."""
    def asleep() -> bool:
        [(quiet,)] = rig.query(side, "select coalesce(clock_timestamp() - max(at) "
                                     "> interval '2.5 s', false) from claims")
        return quiet and _armed(rig, side)
    wait_until(asleep, 30, "the loop to sleep its fallback poll")


def _lose_listen(rig: Rig, side: str) -> None:
    """End the LISTEN session on `side` and keep it from coming back."""
    rig.execute(side, REFUSE_LISTEN)
    killed = rig.query(side, "select pg_terminate_backend(pid) from pg_stat_activity "
                             "where application_name = 'syncbridge-listen' "
                             "and datname = current_database()")
    assert killed == [(True,)]
    wait_until(lambda: rig.log_text().count("event=listen_lost") >= 2, 30,
               "the bridge to fail to reconnect at least once")
    assert rig.query(side, LISTENERS)[0][0] == 0 and not _holders(rig, side, "ExclusiveLock")


# -- a LISTEN session lost and not back (failed until _forget_locks woke the loops) --

def _b_to_a_rig(new_db, tmp_path) -> Rig:
    """A one-way link whose source b is not the hub (the hub's session stays up)."""
    return make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "b_to_a")],
                    settings=FALLBACK)


def _fall_asleep(rig: Rig) -> None:
    """The b->a loop armed and asleep on its fallback poll (CLAIM_LOG times its looks)."""
    rig.execute("b", CLAIM_LOG)
    _asleep_armed(rig, "b")
    _asleep_long(rig, "b")


def test_a_lost_listen_session_leaves_the_loop_polling_not_asleep(new_db, tmp_path):
    """The loop went to sleep armed (60 s here); the LISTEN session ends and cannot come
    back at once. Its wake lock ended with it, so writers take it shared and never notify
    (nobody would hear). The loss must wake the loop to poll (`_forget_locks`), or a row
    committed meanwhile waits for the reconnect or the fallback poll."""
    rig = _b_to_a_rig(new_db, tmp_path)
    try:
        _fall_asleep(rig)
        _lose_listen(rig, "b")
        rig.execute("b", "insert into items values (1, 'while no LISTEN session')")
        _arrives(rig, 1, "a")
    finally:
        rig.execute("b", ALLOW_LISTEN)
        rig.close()


def test_status_does_not_vouch_for_a_direction_whose_listen_session_is_lost(new_db, tmp_path):
    """The direction b->a (its source b is not the hub) was
    quiet: claimed nothing while armed. Its LISTEN session is lost and the wake lock with
    it, but `quiet` keeps the direction, so every heartbeat refreshes the hub's sample
    (sync.link_state: queued 0, sampled now) and sync.status says 0 queued while a row
    waits at the source. A fresh sample after the row was written may say 0 only once
    the row is on the sink (the source deletes its signal after the sink commits)."""
    rig = _b_to_a_rig(new_db, tmp_path)
    try:
        _fall_asleep(rig)
        sample = ("select queued, sampled_at > %s from sync.link_state "
                  "where link = 'items' and source_side = 'b'")
        [(armed_at,)] = rig.query("a", "select clock_timestamp()")
        # a sample after the arm: from then on the heartbeat vouches for the direction
        wait_until(lambda: rig.query("a", sample, (armed_at,)) == [(0, True)], 30,
                   "the quiet direction's sample")
        _lose_listen(rig, "b")
        rig.execute("b", "insert into items values (1, 'while no LISTEN session')")
        [(written,)] = rig.query("a", "select clock_timestamp()")
        wait_until(lambda: rig.query("a", sample, (written,))[0][1], 30,
                   "a sample of the direction taken after the row was written")
        [(queued, _)] = rig.query("a", sample, (written,))
        [status] = rig.query("a", "select queued, state from sync.status "
                                  "where link = 'items' and direction = 'b_to_a'")
        on_sink = _count(rig, "a", 1)
        assert queued > 0 or on_sink, f"sampled 0 queued with the row waiting, status {status}"
        assert status[0] > 0 or on_sink, f"sync.status {status} with the row waiting"
    finally:
        rig.execute("b", ALLOW_LISTEN)
        rig.close()


class _OrphaningProxy(Proxy):
    """A TCP proxy whose `drop_clients()` resets the bridge's side of every connection
    and keeps the server's side open: each backend outlives the session the bridge gave
    up on, as behind a dead network path until the server's own keepalives (2 h by
    default) notice."""

    def __init__(self, target_port: int) -> None:
        self.clients: set[asyncio.StreamWriter] = set()
        self.kept: list[asyncio.StreamWriter] = []
        super().__init__(target_port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.clients.add(writer)
        self.kept.append(up_w)
        await asyncio.gather(self._forward(reader, up_w), self._pipe(up_r, writer),
                             return_exceptions=True)
        self.clients.discard(writer)

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """Client to server; the server's side stays open when the client's ends."""
        while data := await r.read(65536):
            w.write(data)
            await w.drain()

    def drop_clients(self) -> None:
        def kill() -> None:
            for w in list(self.clients):
                w.transport.abort()
            self.clients.clear()

        self._call(kill)

    def close(self) -> None:
        def kill() -> None:
            for w in self.kept:
                w.transport.abort()

        self._call(kill)
        super().close()


def _listen_pids(rig: Rig, side: str) -> list[int]:
    return sorted(r[0] for r in rig.query(
        side, "select pid from pg_stat_activity where application_name = "
              "'syncbridge-listen' and datname = current_database()"))


def _lock_pids(rig: Rig, side: str, mode: str) -> list[int]:
    cls, key = wake_lock("items", side)
    return sorted(r[0] for r in rig.query(
        side, "select l.pid from pg_locks l where l.locktype = 'advisory' "
              "and l.classid::bigint = %s::bigint & 4294967295 "
              "and l.objid::bigint = %s::bigint & 4294967295 and l.objsubid = 2 "
              "and l.granted and l.mode = %s and l.database = (select oid from pg_database "
              "where datname = current_database())", (cls, key, mode)))


def test_an_orphaned_listen_backend_does_not_keep_the_new_session_from_arming(
        new_db, tmp_path):
    """The bridge loses its LISTEN connection on its side only
    (a reset on the path): the server's backend lives on, holding the wake lock
    exclusive, until the server's keepalives end it (tcp_keepalives_idle, 2 h by
    default; the bridge once set keepalives on its own socket only). The new LISTEN session
    can never take the lock, so the loop polls every max_poll_interval instead of
    sleeping: statements while idle, for hours. (No row waits: writers find the lock
    held and notify, and the new session hears them.)"""
    rig = _b_to_a_rig(new_db, tmp_path)
    proxy = _OrphaningProxy(int(rig.dsn["b"].rsplit(":", 1)[1].split("/")[0]))
    try:
        text = rig.config_path.read_text()
        rig.config_path.write_text(text.replace(f'"{rig.dsn["b"]}"',
                                                f'"{proxy.dsn(rig.dsn["b"])}"'))
        rig.execute("b", CLAIM_LOG)
        _asleep_armed(rig, "b")
        [orphan] = _listen_pids(rig, "b")
        proxy.drop_clients()
        wait_until(lambda: "event=listen_restored" in rig.log_text(), 60, "a new LISTEN")
        wait_until(lambda: [p for p in _listen_pids(rig, "b") if p != orphan], 30,
                   "the new LISTEN session")
        rig.execute("b", "insert into items values (1, 'after the reset')")
        _arrives(rig, 1, "a")
        _asleep_long(rig, "b")  # the loop stops looking: it sleeps armed
        [new] = [p for p in _listen_pids(rig, "b") if p != orphan]
        wait_until(lambda: _lock_pids(rig, "b", "ExclusiveLock") == [new], WITHIN,
                   "the new LISTEN session to hold the wake lock (the bridge to sleep)")
    finally:
        rig.close()
        proxy.close()


# -- savepoints: a subtransaction's xact lock is released with it ------------------------

def test_a_released_savepoint_keeps_the_lock_to_commit(new_db, tmp_path):
    """The writer's statement ran in a savepoint with no bridge holding the lock: it took
    the lock shared in the subtransaction. RELEASE SAVEPOINT hands the lock to the
    parent, so the bridge must not arm (and sleep) while the writer is open; the row
    arrives soon after the commit without a NOTIFY."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings=FALLBACK)
    try:
        with psycopg.connect(rig.dsn["a"]) as writer:
            writer.execute("savepoint s")
            writer.execute("insert into items values (1, 'in a released savepoint')")
            writer.execute("release savepoint s")
            assert _holders(rig, "a", "ShareLock") == [""]
            rig.start_bridge()
            _listening(rig)
            assert not _armed(rig)
            writer.commit()
        _arrives(rig, 1)
        wait_until(lambda: _armed(rig), WITHIN, "the bridge to sleep with the wake lock")
    finally:
        rig.close()


def test_a_rolled_back_savepoint_frees_the_lock_and_the_outer_statement_notifies(
        new_db, tmp_path):
    """The lock a rolled-back savepoint took goes with its rows (ROLLBACK TO releases
    the subtransaction's locks): the bridge may arm while the writer stays open, and the
    writer's next statement, in the outer transaction, finds it held and notifies. The
    rolled-back row never travels; the committed one arrives by that NOTIFY."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings=FALLBACK)
    try:
        with psycopg.connect(rig.dsn["a"]) as writer:
            writer.execute("savepoint s")
            writer.execute("insert into items values (1, 'rolled back')")
            assert _holders(rig, "a", "ShareLock") == [""]
            writer.execute("rollback to savepoint s")
            assert _holders(rig, "a", "ShareLock") == []
            rig.start_bridge()
            _listening(rig)
            wait_until(lambda: _armed(rig), WITHIN, "the bridge to arm past the open writer")
            writer.execute("insert into items values (2, 'outer, after the rollback')")
            assert _holders(rig, "a", "ShareLock") == []  # it found the lock held: notifies
            writer.commit()
        _arrives(rig, 2)
        assert _count(rig, "b", 1) == 0
        assert rig.query("a", "select count(*) from sync.queue") == [(0,)]
    finally:
        rig.close()


def test_a_plpgsql_exception_block_that_fails_frees_the_lock(new_db, tmp_path):
    """A PL/pgSQL exception block is a subtransaction too: a statement that took the lock
    shared and then failed inside it gives the lock back with its rows; the bridge arms
    past the open writer, whose later write notifies."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings=FALLBACK)
    try:
        with psycopg.connect(rig.dsn["a"]) as writer:
            writer.execute("""do $$ begin
                insert into items values (1, 'fails after its trigger ran');
                perform 1 / 0;
            exception when division_by_zero then null;
            end $$""")
            assert _holders(rig, "a", "ShareLock") == []
            rig.start_bridge()
            _listening(rig)
            wait_until(lambda: _armed(rig), WITHIN, "the bridge to arm past the open writer")
            writer.execute("insert into items values (2, 'after the block')")
            writer.commit()
        _arrives(rig, 2)
        assert _count(rig, "b", 1) == 0
    finally:
        rig.close()


# -- isolation levels and many statements -------------------------------------------------

@pytest.mark.parametrize("level", [psycopg.IsolationLevel.REPEATABLE_READ,
                                   psycopg.IsolationLevel.SERIALIZABLE],
                         ids=["repeatable_read", "serializable"])
def test_a_snapshot_writer_of_many_statements_open_across_the_arm(new_db, tmp_path, level):
    """A REPEATABLE READ or SERIALIZABLE writer runs many captured statements in one
    transaction, the first before any bridge held the lock (shared from then on, no
    NOTIFY at commit). The bridge must poll, not sleep, until the commit; then every row
    arrives and the bridge arms."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings=FALLBACK)
    try:
        with psycopg.connect(rig.dsn["a"]) as writer:
            writer.isolation_level = level
            for i in range(1, 41):
                writer.execute("insert into items values (%s, 'many')", (i,))
            writer.execute("update items set v = 'updated' where id <= 20")
            writer.execute("delete from items where id > 30")
            rig.start_bridge()
            _listening(rig)
            assert not _armed(rig)
            for i in range(41, 51):  # more statements while the bridge polls
                writer.execute("insert into items values (%s, 'more')", (i,))
            assert not _armed(rig)
            writer.commit()
        _arrives(rig, 50)
        rig.wait_equal({"items": ["id"]}, WITHIN)
        wait_until(lambda: _armed(rig), WITHIN, "the bridge to sleep with the wake lock")
        rig.execute("a", "insert into items values (100, 'notified')")
        _arrives(rig, 100)
    finally:
        rig.close()


# -- two-phase commit ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared_server():
    """A server of its own that allows prepared transactions (the shared test server
    runs with max_prepared_transactions = 0)."""
    pg = EmbeddedPostgres().start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("alter system set max_prepared_transactions = 4")
        pg.restart()
        yield pg
    finally:
        pg.destroy()


def test_a_prepared_transaction_holds_off_the_sleep_until_commit_prepared(
        prepared_server, tmp_path):
    """A two-phase writer prepared its transaction with the lock taken shared (no bridge
    held it). The prepared transaction keeps the lock until COMMIT PREPARED: the bridge
    must poll meanwhile, and the row arrives soon after the commit, with no NOTIFY."""
    dsns = {}
    with psycopg.connect(prepared_server.dsn(), autocommit=True) as c:
        for side in "ab":
            c.execute(f"create database wake_2pc_{side}")
            dsns[side] = prepared_server.dsn(f"wake_2pc_{side}")
    rig = Rig(Path(tmp_path), dsns["a"], dsns["b"],
              [link("items", "items", ["id"], "a_to_b")], FALLBACK)
    rig.execute("a", SCHEMA)
    rig.execute("b", SCHEMA)
    rig.setup()
    try:
        with psycopg.connect(rig.dsn["a"], autocommit=True) as writer:
            writer.execute("begin")
            writer.execute("insert into items values (1, 'prepared')")
            writer.execute("prepare transaction 'wake_breaker'")
        assert _holders(rig, "a", "ShareLock") == ["(prepared)"]
        rig.start_bridge()
        _listening(rig)
        assert not _armed(rig)
        rig.execute("a", "commit prepared 'wake_breaker'")
        _arrives(rig, 1)
        wait_until(lambda: _armed(rig), WITHIN, "the bridge to sleep with the wake lock")
    finally:
        rig.close()
        with psycopg.connect(rig.dsn["a"], autocommit=True) as c:  # none left by a failure
            for (gid,) in c.execute("select gid from pg_prepared_xacts").fetchall():
                c.execute(f"rollback prepared '{gid}'")


# -- two-way links, notify = false ---------------------------------------------------------

def test_two_way_each_side_arms_and_the_bridges_applies_hold_no_lock(new_db, tmp_path):
    """Both directions in one loop: each side sleeps with its own wake lock, and the
    bridge's own applies (echoes, returned before the lock) leave no shared holder that
    would keep the other direction from arming. A write on either side then arrives by
    NOTIFY."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "both")],
                   settings=FALLBACK)
    try:
        rig.start_bridge()
        rig.execute("a", "insert into items values (1, 'from a')")
        _arrives(rig, 1, "b", 60)
        rig.execute("b", "insert into items values (2, 'from b')")
        _arrives(rig, 2, "a")
        wait_until(lambda: _armed(rig, "a") and _armed(rig, "b"), WITHIN,
                   "both sides to sleep with their wake locks")
        assert _holders(rig, "a", "ShareLock") == [] and _holders(rig, "b", "ShareLock") == []
        rig.execute("b", "insert into items values (3, 'from b, notified')")
        _arrives(rig, 3, "a")
        rig.execute("a", "insert into items values (4, 'from a, notified')")
        _arrives(rig, 4, "b")
    finally:
        rig.close()


def test_a_notify_false_link_polls_and_takes_no_wake_lock(new_db, tmp_path):
    """notify = false: the capture function has no notify entry and the bridge never
    takes the lock; rows arrive by its poll (max_poll_interval 1 s)."""
    rig = make_rig(new_db, tmp_path, SCHEMA,
                   [link("items", "items", ["id"], "a_to_b", notify=False)], settings=FALLBACK)
    try:
        rig.start_bridge()
        rig.execute("a", "insert into items values (1, 'polled')")
        _arrives(rig, 1, within=60)
        _listening(rig)
        for i in (2, 3):
            rig.execute("a", "insert into items values (%s, 'polled')", (i,))
            _arrives(rig, i)
        assert _holders(rig, "a", "ExclusiveLock") == []
        with psycopg.connect(rig.dsn["a"]) as writer:
            writer.execute("insert into items values (4, 'open')")
            assert _holders(rig, "a", "ShareLock") == []  # no lock taken by the function
    finally:
        rig.close()


# -- capture reinstalled, the bridge reloaded ---------------------------------------------

def test_capture_reinstalled_while_the_bridge_sleeps_still_wakes_it(new_db, tmp_path):
    """`syncbridge uninstall` then `install` while the bridge sleeps armed: the new
    functions take the same lock (named after the link and side), so the next write
    finds it held and notifies."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings=FALLBACK)
    try:
        _asleep_armed(rig)
        list(uninstall(rig.config))
        list(install(rig.config))
        assert _armed(rig)
        rig.execute("a", "insert into items values (1, 'after the reinstall')")
        _arrives(rig, 1)
    finally:
        rig.close()


def test_a_reload_leaves_exactly_one_lock_and_the_new_term_sleeps_armed(new_db, tmp_path):
    """A SIGHUP that changes a link ends the term: the old LISTEN session (and its
    lock) must be gone, or the new term could not arm and would poll forever; the new
    term arms, and a write after it arrives by NOTIFY."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   settings=FALLBACK)
    try:
        _asleep_armed(rig)
        text = rig.config_path.read_text()
        rig.config_path.write_text(text.replace('direction = "a_to_b"',
                                                'direction = "a_to_b"\nbatch_size = 300'))
        rig.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "event=reloaded" in rig.log_text(), 60, "the reload")
        wait_until(lambda: rig.log_text().count("event=active") >= 2, 60, "the next term")
        wait_until(lambda: _armed(rig), WITHIN, "the new term to sleep with the wake lock")
        assert rig.query("a", LISTENERS)[0][0] == 1
        rig.execute("a", "insert into items values (1, 'after the reload')")
        _arrives(rig, 1)
    finally:
        rig.close()


# -- scale-out: two bridges share the links ------------------------------------------------

def _holdings(rig: Rig) -> dict[int, list[str]]:
    """pid -> the links that bridge holds, as its heartbeat says (sync.bridges.links)."""
    return {pid: sorted(links or []) for pid, links in rig.query(
        "a", "select pid, links from sync.bridges where role = 'active'")}


def test_two_bridges_each_arm_the_links_they_hold_and_a_survivor_arms_the_dead_ones(
        new_db, tmp_path):
    """Two bridges of one config share two links: each link side's wake lock is held by
    exactly one LISTEN session (its holder's), writes on both links arrive by NOTIFY, and
    when one bridge is killed its link's lock dies with it and the survivor, taking the
    link, arms it (not polling, not sleeping unarmed)."""
    names = ["t0", "t1"]
    rig = make_rig(new_db, tmp_path,
                   "".join(f"create table {t} (id int primary key, v text);" for t in names),
                   [link(t, t, ["id"], "a_to_b") for t in names], settings=FALLBACK)
    try:
        first, second = rig.start_bridge(), rig.start_bridge()
        wait_until(lambda: sorted(map(tuple, _holdings(rig).values())) == [("t0",), ("t1",)],
                   90, "each bridge to hold one link")
        for i, t in enumerate(names):
            rig.execute("a", f"insert into {t} values (%s, 'first')", (i,))
            _arrives(rig, i, within=60, table=t)
        wait_until(lambda: all(_holders(rig, "a", "ExclusiveLock", t) == ["syncbridge-listen"]
                               for t in names), WITHIN, "both links armed")
        for i, t in enumerate(names, start=10):
            rig.execute("a", f"insert into {t} values (%s, 'notified')", (i,))
            _arrives(rig, i, table=t)
        first.kill()
        first.wait(10)
        # The dead bridge's sync.bridges row stays until it is a minute stale (lease.sql's
        # `gone`), so it is the survivor's own heartbeat that must name both links.
        wait_until(lambda: _holdings(rig).get(second.pid) == names, 60,
                   "the survivor to hold both links")
        wait_until(lambda: all(_holders(rig, "a", "ExclusiveLock", t) == ["syncbridge-listen"]
                               for t in names), WITHIN, "the survivor to arm both links")
        for i, t in enumerate(names, start=20):
            rig.execute("a", f"insert into {t} values (%s, 'after the takeover')", (i,))
            _arrives(rig, i, table=t)
        # and the dead bridge's row goes, the survivor's heartbeat its only one: a minute
        # after the dead one's last beat plus a beat (2 s), with room for a loaded machine
        wait_until(lambda: list(_holdings(rig).items()) == [(second.pid, names)], 120,
                   "the dead bridge's sync.bridges row to be gone")
    finally:
        rig.close()


def test_a_listen_session_terminated_by_an_arm_is_replaced_not_fatal(new_db, tmp_path):
    """_arm and _disarm terminate() the LISTEN connection when a statement on it fails;
    the LISTEN loop then ended on asyncpg's AttributeError (a terminated connection has
    no server pid) and the bridge exited, seen with every syncbridge backend killed under
    writes. The loop must open a new session and end the old backend (its orphan)."""
    from syncbridge.bridge import daemon

    rig = make_rig(new_db, tmp_path, "create table t (id int primary key, v text);",
                   [link("t", "t", ["id"], "a_to_b")])

    async def scenario() -> tuple[int, int]:
        bridge = daemon.Bridge(rig.config)
        task = asyncio.create_task(bridge._listen("a"))
        try:
            async def session() -> tuple:
                while "a" not in bridge.listen_conns:
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
                return bridge.listen_conns["a"]
            first = await asyncio.wait_for(session(), 30)
            old = first[0].get_server_pid()
            first[0].terminate()  # what _arm does on a failed arm statement
            async def replaced() -> int:
                while bridge.listen_conns.get("a") in (None, first):
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
                return bridge.listen_conns["a"][0].get_server_pid()
            return old, await asyncio.wait_for(replaced(), 30)
        finally:
            bridge.halt.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        old, new = asyncio.run(scenario())
        assert new != old
        assert rig.query("a", "select count(*) from pg_stat_activity where pid = %s", (old,)) \
            == [(0,)], "the old LISTEN backend must be gone"
    finally:
        rig.close()
