"""Scale-out (issue 16): bridges of one configuration share its links.

Each link has its own advisory lock on the hub; a bridge drains only the links
it holds, up to its fair share ceil(links / live bridges), and a dead bridge's
links move to the survivors at their next heartbeat (bridge/sharing.py)."""

from __future__ import annotations

import signal
import threading
import time

import psycopg

from rigs import EVENTUALLY, link, make_rig
from syncbridge.bridge.bench.rig import Rig, wait_until

TAKEOVER_WITHIN = 5.0  # seconds: a killed bridge's links drained again (heartbeat 2 s)


def _tables(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


def _schema(n: int) -> str:
    return "".join(f"create table {t} (id int primary key, v text);" for t in _tables(n))


# On the sink: one row per key per committed apply (see tests/test_crash.py): a batch
# applied twice leaves two rows for each of its keys.
APPLY_LOG = """
create table public.applies (tbl text not null, id int not null);
create function public.log_apply() returns trigger language plpgsql as $$
begin
    insert into public.applies values (tg_table_name, new.id);
    return new;
end $$;
"""


def _rig(new_db, tmp_path, n: int) -> Rig:
    rig = make_rig(new_db, tmp_path, _schema(n),
                   [link(t, t, ["id"], "a_to_b", batch_size=200) for t in _tables(n)])
    rig.execute("b", APPLY_LOG + "".join(
        f"create trigger log_apply before insert on {t} for each row "
        "execute function public.log_apply();" for t in _tables(n)))
    return rig


def _holdings(rig: Rig) -> dict[int, list[str]]:
    """pid -> the links that bridge holds, as its heartbeat says (sync.bridges.links)."""
    return {pid: sorted(links or []) for pid, links in rig.query(
        "a", "select pid, links from sync.bridges where role = 'active'")}


def _shared(rig: Rig, procs: list, n: int, each: int | None = None) -> bool:
    """Every link held by exactly one of `procs`, each holding some (`each`: that many)."""
    held = _holdings(rig)
    mine = [held.get(p.pid, []) for p in procs]
    flat = sorted(x for m in mine for x in m)
    return flat == _tables(n) and all(m and (each is None or len(m) == each) for m in mine)


def _write(rig: Rig, n: int, start: int, count: int) -> None:
    with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
        for t in _tables(n):
            c.execute(f"insert into {t} select g, 'v' || g "
                      "from generate_series(%s::int, %s::int) g", (start, start + count - 1))


def _converged(rig: Rig, n: int) -> None:
    rig.wait_equal({t: ["id"] for t in _tables(n)})


def _assert_each_key_applied_once(rig: Rig, n: int) -> None:
    times = rig.query("b", "select n, count(*) from (select tbl, id, count(*) as n "
                           "from applies group by tbl, id) per_key group by n order by n")
    total = sum(rig.query("a", f"select count(*) from {t}")[0][0] for t in _tables(n))
    assert times == [(1, total)], f"(applies of a key, keys): {times}"


def test_two_bridges_share_the_links_of_one_config(new_db, tmp_path):
    rig = _rig(new_db, tmp_path, 4)
    try:
        first = rig.start_bridge()
        wait_until(lambda: _shared(rig, [first], 4), EVENTUALLY, "the first bridge alone")
        second = rig.start_bridge()
        # the first gives back what is over its share, the second takes it
        wait_until(lambda: _shared(rig, [first, second], 4, each=2), EVENTUALLY,
                   "both bridges holding two links each")
        _write(rig, 4, 1, 500)
        _converged(rig, 4)
        rig.wait_drained()
        _assert_each_key_applied_once(rig, 4)
        held = _holdings(rig)
        by_link = dict(rig.query("a", "select link, held_by from sync.status"))
        for pid, links in held.items():
            for name in links:
                assert by_link[name].endswith(f":{pid}"), (name, by_link[name])
        assert "event=links_given_back" in rig.log_text()
        assert first.poll() is None and second.poll() is None
        # one coordinator: the hub-wide jobs run once
        assert rig.log_text().count("coordinator=yes") >= 1
        rig.proc = second
        assert rig.stop_bridge() == 0
        wait_until(lambda: _shared(rig, [first], 4), EVENTUALLY, "the first takes all again")
        rig.proc = first
        assert rig.stop_bridge() == 0
    finally:
        rig.close()


def _writer(rig: Rig, n: int, stop: threading.Event, count: list[int]) -> None:
    """Inserts into every table, ten keys at a time, until stopped."""
    with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
        while not stop.is_set():
            k = count[0]
            for t in _tables(n):
                c.execute(f"insert into {t} select g, 'w' || g "
                          "from generate_series(%s::int, %s::int) g", (k + 1, k + 10))
            count[0] = k + 10


def test_a_killed_bridges_links_move_to_the_survivor_under_writes(new_db, tmp_path):
    rig = _rig(new_db, tmp_path, 4)
    stop, count = threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(rig, 4, stop, count), daemon=True)
    try:
        survivor = rig.start_bridge()
        wait_until(lambda: _shared(rig, [survivor], 4), EVENTUALLY, "the first bridge")
        victim = rig.start_bridge()
        wait_until(lambda: _shared(rig, [survivor, victim], 4, each=2), EVENTUALLY,
                   "both bridges holding two links each")
        started = rig.query("a", "select instance, started_at from sync.bridges "
                                 "where pid = %s", (survivor.pid,))
        writer.start()
        wait_until(lambda: count[0] >= 500, EVENTUALLY, "writes under way")
        moved = _holdings(rig)[victim.pid]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed = time.monotonic()
        with psycopg.connect(rig.dsn["a"], autocommit=True) as c:  # a key on each moved link
            for t in moved:
                c.execute(f"insert into {t} values (-1, 'after the kill')")
        wait_until(lambda: all(rig.query("b", f"select count(*) from {t} where id = -1")
                               == [(1,)] for t in moved), EVENTUALLY,
                   "the killed bridge's links drained by the survivor")
        took = time.monotonic() - killed
        print(f"the survivor drained the killed bridge's links {took:.2f}s after SIGKILL")
        assert _shared(rig, [survivor], 4)
        assert took < TAKEOVER_WITHIN, f"{took:.2f}s"
        stop.set()
        writer.join(30)
        _converged(rig, 4)
        rig.wait_drained()
        _assert_each_key_applied_once(rig, 4)
        assert survivor.poll() is None, "the survivor kept running"
        assert rig.query("a", "select instance, started_at from sync.bridges where pid = %s",
                         (survivor.pid,)) == started, "the survivor never restarted"
        assert "event=leadership_lost" not in rig.log_text()
    finally:
        stop.set()
        rig.close()


def test_a_third_bridge_joining_takes_a_share(new_db, tmp_path):
    """Four links on three bridges run as 2, 1, 1: a bridge holding fewer than
    floor(links / bridges) gets one from a bridge at the ceiling."""
    rig = _rig(new_db, tmp_path, 4)
    try:
        procs = [rig.start_bridge()]
        wait_until(lambda: _shared(rig, procs, 4), EVENTUALLY, "the first bridge")
        procs.append(rig.start_bridge())
        wait_until(lambda: _shared(rig, procs, 4, each=2), EVENTUALLY, "two links each")
        _write(rig, 4, 1, 200)
        procs.append(rig.start_bridge())
        wait_until(lambda: _shared(rig, procs, 4) and sorted(
            len(_holdings(rig)[p.pid]) for p in procs) == [1, 1, 2], EVENTUALLY,
            "the third bridge holding a share")
        _write(rig, 4, 201, 200)
        _converged(rig, 4)
        rig.wait_drained()
        _assert_each_key_applied_once(rig, 4)
        assert all(p.poll() is None for p in procs)
    finally:
        rig.close()
