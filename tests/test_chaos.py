"""Chaos: writers on both sides of a `both` link while the bridge is killed at
random moments (12 SIGKILLs), the server restarts once and the LISTEN
connection is terminated once. At the end the tables are equal, every signal
was consumed by exactly one applied batch, and nothing was dead-lettered.

Each side writes its own key range: concurrent edits of one key on both sides
are conflicts, which a `both` link without a conflict policy does not resolve.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from rigs import Rig, link
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.embedded import EmbeddedPostgres

SCHEMA = "create table items (id int primary key, v int not null, note text);"
# counts every signal capture writes, in the writer's own transaction
COUNTER = """
create table public.chaos_signals (n bigint not null);
insert into public.chaos_signals values (0);
create function public.chaos_count() returns trigger language plpgsql as $$
begin
    update public.chaos_signals set n = n + (select count(*) from new_rows);
    return null;
end $$;
create trigger chaos_count after insert on sync.queue
    referencing new table as new_rows for each statement execute function public.chaos_count();
"""
KILLS = 12


def _writer(dsn: str, lo: int, stop: threading.Event, seed: int) -> None:
    rnd = random.Random(seed)
    conn = None
    while not stop.is_set():
        try:
            conn = conn or psycopg.connect(dsn, autocommit=True)
            k = lo + rnd.randrange(400)
            op = rnd.random()
            if op < 0.5:
                conn.execute("insert into items values (%s, 0, 'n') on conflict (id) "
                             "do update set v = items.v + 1", (k,))
            elif op < 0.85:
                conn.execute("update items set v = v + 1, note = md5(random()::text) "
                             "where id = %s", (k,))
            else:
                conn.execute("delete from items where id = %s", (k,))
        except psycopg.OperationalError:  # the server restarts under us: reconnect, go on
            conn = None
            stop.wait(0.05)  # reconnect backoff while the server is down
    if conn:
        conn.close()


def _batches(rig: Rig) -> int:
    """Batches applied so far, both directions (each sink records its own)."""
    return sum(rig.query(s, "select count(*) from sync.applied_batches")[0][0] for s in "ab")


def _apply_more(rig: Rig, batches: int, what: str) -> None:
    """Wait for `batches` more applied batches: the kill lands at a random moment of
    a bridge that is working, not of one still starting up."""
    target = _batches(rig) + batches
    wait_until(lambda: _batches(rig) >= target, 60, f"{what} to apply {batches} batches")


@pytest.fixture
def server(tmp_path):
    pg = EmbeddedPostgres(tmp_path / "pg").start()
    yield pg
    pg.destroy()


def test_chaos(server, tmp_path):
    for db in ("a", "b"):
        with psycopg.connect(server.dsn(), autocommit=True) as c:
            c.execute(f"create database {db}")
    rig = Rig(tmp_path, server.dsn("a"), server.dsn("b"), [link("items", "items", ["id"])],
              {"fallback_poll": 1.0})
    for side in ("a", "b"):
        rig.execute(side, SCHEMA)
    rig.setup()
    for side in ("a", "b"):
        rig.execute(side, COUNTER)
    stop = threading.Event()
    pool = ThreadPoolExecutor(2, thread_name_prefix="chaos-writer")
    rnd = random.Random(42)
    started = time.monotonic()
    try:
        # a writer's unexpected error is raised again here by result()
        writers = [pool.submit(_writer, rig.dsn[s], lo, stop, lo)
                   for s, lo in (("a", 0), ("b", 10_000))]
        for i in range(KILLS):
            proc = rig.start_bridge()
            _apply_more(rig, rnd.randint(1, 3), f"bridge run {i}")
            if i == 4:
                server.restart()
                _apply_more(rig, 1, "the bridge after the server restart")
            if i == 8:
                lost = rig.log_text().count("event=listen_lost")
                wait_until(lambda: rig.query("a", "select pg_terminate_backend(pid) from "
                                                  "pg_stat_activity where application_name = "
                                                  "'syncbridge-listen'") != [], 30, "LISTEN")
                wait_until(lambda n=lost: rig.log_text().count("event=listen_lost") > n, 30,
                           "the bridge to notice the lost LISTEN connection")
                _apply_more(rig, rnd.randint(0, 2), "the bridge after losing LISTEN")
            assert proc.poll() is None, rig.log_text()[-2000:]
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        stop.set()
        for w in writers:
            w.result(timeout=30)
        rig.start_bridge()
        rig.wait_equal({"items": ["id"]}, 120)
        rig.wait_drained(60)
        rows = len(rig.rows("a", "items", ["id"]))
        assert rows > 100, "the writers must have written for the test to mean anything"
        for src, sink in (("a", "b"), ("b", "a")):
            produced = rig.query(src, "select n from chaos_signals")[0][0]
            consumed = rig.query(sink, "select coalesce(sum(signals), 0) from "
                                       "sync.applied_batches where source_side = %s", (src,))[0][0]
            assert consumed == produced, f"{src}->{sink}: {produced} signals, {consumed} applied"
            assert produced > 500
        assert rig.query("a", "select count(*) from sync.dead_letter") == [(0,)]
        print(f"chaos: {KILLS} kills, 1 restart, 1 LISTEN kill, {rows} rows, "
              f"{produced} signals from b, {time.monotonic() - started:.1f}s")
    finally:
        stop.set()
        pool.shutdown(wait=True)
        rig.close()
