"""Hub and spokes: one table kept in step across three Postgres peers.

Hub H is linked two-way to spoke S1 (link l1) and two-way to spoke S2 (link
l2). A change made on S1 reaches H through l1, and H's capture for l2 queues
it (the write carries origin l1:b, which only l1's own capture on H skips), so
it reaches S2 exactly once; S2's capture skips l2's write (origin l2:a), so
nothing comes back. docs/topologies.md describes the topology.
"""

from __future__ import annotations

import signal
import threading

import psycopg

from syncbridge.bridge.bench.rig import Rig, toml_links, toml_value, wait_until

SCHEMA = "create table items (id int primary key, v text, n int not null default 0);"
PEERS = ("h", "s1", "s2")


def _link(name: str, spoke: str, **extra) -> dict:
    return {"name": name, "a": {"peer": "h", "table": "items"},
            "b": {"peer": spoke, "table": "items"}, "key": ["id"], "direction": "both",
            "batch_size": 20, **extra}


def _hub_rig(new_db, tmp_path, links: list[dict]) -> Rig:
    """A Rig whose config names three peers (the Rig's helpers take any peer name)."""
    dsn = {p: new_db(p) for p in PEERS}
    rig = Rig(tmp_path, dsn["h"], dsn["s1"], [])
    rig.dsn = dsn
    peers = "".join(f'[peers.{p}]\ndialect = "postgres"\ndsn = {toml_value(d)}\n\n'
                    for p, d in dsn.items())
    rig.config_path.write_text('hub = "h"\n\n[bridge]\ncanary_interval = 0\n'
                               'heartbeat_interval = 0.5\n\n' + peers + toml_links(links))
    for p in PEERS:
        rig.execute(p, SCHEMA)
    rig.setup()
    return rig


def _texts(rig: Rig) -> dict[str, list[tuple]]:
    return {p: rig.texts(p, "items", ["id"]) for p in PEERS}


def _converged(rig: Rig) -> bool:
    t = _texts(rig)
    return t["h"] == t["s1"] == t["s2"]


def _queued(rig: Rig) -> dict[str, int]:
    return {p: rig.query(p, "select count(*) from sync.queue")[0][0] for p in PEERS}


def _batches(rig: Rig) -> dict[str, int]:
    """Batches each peer applied as a sink (sync.applied_batches is per sink)."""
    return {p: rig.query(p, "select count(*) from sync.applied_batches")[0][0] for p in PEERS}


def _beats(rig: Rig, n: int) -> None:
    """Wait for n more heartbeats of the active bridge: time passes on the bridge's
    own clock (its loops ran), without sleeping a guessed interval."""
    sql = "select max(heartbeat) from sync.bridges where role = 'active'"
    for _ in range(n):
        last = rig.query("h", sql)[0][0]
        wait_until(lambda t=last: rig.query("h", sql)[0][0] > t, 30, "a heartbeat")


def _interleaved(own: range, other: range) -> list[int]:
    out: list[int] = []
    for i, key in enumerate(own):
        out += [key, other[i]] if i < len(other) else [key]
    return out


def _writer(rig: Rig, peer: str, ids: list[int], resume: threading.Event,
            done: dict) -> None:
    """Inserts its own keys and overwrites some of the others' keys; halfway through it
    waits for `resume` (the test kills the bridge meanwhile), then writes the rest."""
    with psycopg.connect(rig.dsn[peer], autocommit=True) as c:
        for i, key in enumerate(ids):
            if i == len(ids) // 2 and not resume.wait(60):
                return
            c.execute("insert into items (id, v) values (%s, %s) on conflict (id) do update "
                      "set v = excluded.v, n = items.n + 1", (key, f"{peer}-{i}"))
            done[peer] = i + 1


def test_a_spoke_change_reaches_the_other_spoke_once_and_never_comes_back(new_db, tmp_path):
    rig = _hub_rig(new_db, tmp_path, [_link("l1", "s1"), _link("l2", "s2")])
    try:
        pid = rig.start_bridge().pid
        rig.execute("s1", "insert into items values (1, 'from s1', 0)")
        wait_until(lambda: rig.query("s2", "select v from items where id = 1") == [("from s1",)],
                   30, "the row on s2")
        wait_until(lambda: _queued(rig) == dict.fromkeys(PEERS, 0), 30, "queues to drain")
        # one batch per hop: s1 -> h (l1), h -> s2 (l2); nothing applied back to s1 or h
        before = _batches(rig)
        assert before == {"h": 1, "s1": 0, "s2": 1}
        rig.execute("s2", "update items set v = 'from s2' where id = 1")
        wait_until(lambda: rig.query("s1", "select v from items where id = 1") == [("from s2",)],
                   30, "the update on s1")
        wait_until(lambda: _queued(rig) == dict.fromkeys(PEERS, 0), 30, "queues to drain")
        _beats(rig, 3)
        assert _queued(rig) == dict.fromkeys(PEERS, 0)
        assert _batches(rig) == {"h": 2, "s1": 1, "s2": 1}  # no echo, no loop
        assert _converged(rig)
        assert rig.proc is not None and rig.proc.pid == pid
        assert rig.stop_bridge() == 0
    finally:
        rig.close()


def test_three_peers_converge_with_writers_everywhere_and_a_sigkill(new_db, tmp_path):
    rig = _hub_rig(new_db, tmp_path, [_link("l1", "s1"), _link("l2", "s2")])
    resume = threading.Event()
    done = dict.fromkeys(PEERS, 0)
    # each peer inserts its own range and overwrites a share of the others' keys,
    # interleaved, so the same keys change on several peers at once (conflicts)
    own = {"h": range(1, 101), "s1": range(101, 201), "s2": range(201, 301)}
    other = {"h": range(201, 241), "s1": range(1, 41), "s2": range(101, 141)}
    ranges = {p: _interleaved(own[p], other[p]) for p in PEERS}
    threads = [threading.Thread(target=_writer, args=(rig, p, ranges[p], resume, done))
               for p in PEERS]
    try:
        rig.start_bridge()
        for t in threads:
            t.start()
        wait_until(lambda: all(done[p] == len(ranges[p]) // 2 for p in PEERS), 30,
                   "every writer halfway")
        wait_until(lambda: _batches(rig)["h"] > 2, 30, "batches applied on the hub")
        assert rig.stop_bridge(signal.SIGKILL) == -signal.SIGKILL  # mid-drain, queues full
        rig.start_bridge()
        resume.set()  # the second half is written while the new bridge recovers
        for t in threads:
            t.join(60)
        assert done == {p: len(ranges[p]) for p in PEERS}
        wait_until(lambda: _converged(rig) and _queued(rig) == dict.fromkeys(PEERS, 0), 60,
                   "three equal tables and empty queues")
        batches = _batches(rig)
        _beats(rig, 3)
        assert _queued(rig) == dict.fromkeys(PEERS, 0), "a loop queues again"
        assert _batches(rig) == batches, "a loop keeps applying"
        texts = _texts(rig)
        assert texts["h"] == texts["s1"] == texts["s2"]
        assert sorted(int(r[0]) for r in texts["h"]) == list(range(1, 301))
        assert rig.stop_bridge() == 0
    finally:
        resume.set()
        rig.close()
