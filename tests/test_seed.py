"""`syncbridge seed`: a COPY-based first copy into an empty sink, handed over exactly.

The handover rule under test: every change committed after the copy's snapshot
is applied by the bridge afterwards, and no signal queued before it is applied
at all (the copy already holds its row).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading

import psycopg
import pytest

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import Rig, wait_until
from syncbridge.engine import config as config_mod
from syncbridge.engine.reconcile import seed
from syncbridge.engine.validate import shapes

ROWS = 50_000
CHUNK = 5_000
SCHEMA_A = """
create table items (id int primary key, v text, n numeric(12,2), ts timestamptz, j jsonb,
                    f8 double precision);
"""
# the sink names v `label` and has a column the link does not carry
SCHEMA_B = """
create table items (id int primary key, label text, n numeric(12,2), ts timestamptz, j jsonb,
                    f8 double precision, note text default 'sink only');
"""
LOAD = """
insert into items
select g, case when g %% 97 = 0 then null else 'v' || g || repeat(' ', g %% 3) end,
       g / 7.0, '2026-01-01 00:00+00'::timestamptz + g * interval '1.000001 second',
       case when g %% 5 = 0 then 'null'::jsonb else jsonb_build_object('g', g, 'x', 1.50) end,
       g * 0.1
  from generate_series(1, %s) g
"""
# every signal the source queues for the link, with its id (the queue forgets them)
SIGNAL_LOG = """
create table signal_log (id bigint);
create function log_signal() returns trigger language plpgsql as $$
begin insert into public.signal_log select n.id from new_rows n where n.link = 'items'; return null;
end $$;
create trigger log_signal after insert on sync.queue referencing new table as new_rows
    for each statement execute function log_signal();
"""
COLUMNS = {"id": "id", "v": "label", "n": "n", "ts": "ts", "j": "j", "f8": "f8"}


@pytest.fixture
def rig(new_db, tmp_path):
    r = Rig(tmp_path, new_db("a", migrated=True), new_db("b", migrated=True),
            [link("items", "items", ["id"], "a_to_b", columns=COLUMNS)])
    r.execute("a", SCHEMA_A)
    r.execute("b", SCHEMA_B)
    r.execute("a", LOAD, (ROWS,))
    r.setup()
    r.execute("a", SIGNAL_LOG)
    yield r
    r.close()


def _cli(rig: Rig, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "--config",
                           str(rig.config_path), "seed", "items", "--quiet", *args],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


def _same(rig: Rig) -> None:
    """Every linked column equal by its text; the sink-only column kept its default."""
    a = rig.texts("a", "items", ["id"])
    b = rig.texts("b", "items", ["id"])
    assert len(a) == len(b)
    assert [r[:-1] for r in b] == a
    assert {r[-1] for r in b} == {"sink only"}


class Writer:
    """About 100 tx/s of inserts, updates and deletes on the source."""

    def __init__(self, rig: Rig) -> None:
        self.rig, self.stop = rig, threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.rnd = random.Random(17)

    def run(self) -> None:
        with psycopg.connect(self.rig.dsn["a"], autocommit=True) as c:
            n = ROWS
            while not self.stop.wait(0.01):
                k = self.rnd.randrange(1, ROWS + 1)
                op = self.rnd.randrange(3)
                if op == 0:
                    n += 1
                    c.execute("insert into items values (%s, 'new', 1.5, now(), '{}', -0.0)",
                              (n,))
                elif op == 1:
                    c.execute("update items set v = v || '+', n = n + 0.01, "
                              "j = coalesce(j, 'null') || '{\"u\": 1}' where id = %s", (k,))
                else:
                    c.execute("delete from items where id = %s", (k,))

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _logged(rig: Rig) -> int:
    return rig.query("a", "select count(*) from signal_log")[0][0]


def test_seed_under_live_writes_applies_every_later_change_and_no_earlier_one(rig):
    rig.execute("a", "select sync.pause('items', 'seeding')")  # the bridge starts held back
    rig.start_bridge()
    shape = shapes(rig.config, ["items"])["items"]
    seen: list[int] = []
    with Writer(rig):
        wait_until(lambda: _logged(rig) >= 50, 30, "changes queued before the seed")
        run = seed.seed(rig.config, shape, workers=3, chunk_rows=CHUNK, progress=False,
                        on_chunk=lambda r: seen.append(r.copied))
        after = _logged(rig)
        wait_until(lambda: _logged(rig) >= after + 100, 30, "changes after the handover")
    assert run.chunks == -(-run.total // CHUNK) and len(seen) == run.chunks  # ceil
    assert rig.query("a", "select paused_reason from sync.link_control") == [(None,)]
    rig.wait_drained(60)
    _same(rig)
    logged = {r[0] for r in rig.query("a", "select id from signal_log")}
    before = set(run.signals)
    assert before and before <= logged
    applied = rig.query("b", "select coalesce(sum(signals), 0) from sync.applied_batches "
                             "where link = 'items'")[0][0]
    # every signal after the snapshot applied once, none from before it at all
    assert applied == len(logged - before)
    assert rig.query("a", "select backfill from sync.status") == [(f"done {run.copied}",)]


def test_a_killed_seed_resumes_after_its_committed_chunks(rig):
    first = _cli(rig, "--workers", "1", "--chunk-rows", str(CHUNK),
                 env={"SYNCBRIDGE_FAULT": "seed_chunk:3"})
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert rig.query("b", "select count(*) from items") == [(3 * CHUNK,)]
    assert rig.query("b", "select count(*) from sync.seed_chunks") == [(3,)]
    assert rig.query("a", "select paused_reason from sync.link_control") == [("seeding",)]
    # changes while the seed is down: in copied chunks, in chunks still to copy, new keys
    rig.execute("a", "update items set v = 'after the kill' where id <= 10 or id > 40000")
    rig.execute("a", "delete from items where id in (11, 30000)")
    rig.execute("a", "insert into items (id, v) values (%s, 'new')", (ROWS + 1,))
    second = _cli(rig, "--workers", "2", "--chunk-rows", str(CHUNK))
    assert second.returncode == 0, second.stderr
    assert "resumed and finished" in second.stdout
    assert rig.query("b", "select count(*) from sync.seed_chunks") == [(ROWS // CHUNK,)]
    rig.start_bridge()
    rig.wait_drained(60)
    _same(rig)


def test_a_sink_with_rows_is_refused_and_the_link_left_running(rig):
    rig.execute("b", "insert into items (id, label) values (1, 'already here')")
    out = _cli(rig)
    assert out.returncode == 2
    assert "seed refused" in out.stderr and "holds 1 row(s)" in out.stderr
    assert rig.query("a", "select count(*) from sync.link_control "
                          "where paused_reason is not null") == [(0,)]
    assert rig.query("b", "select count(*) from sync.seed_runs") == [(0,)]
    # paused for the seed beforehand (so no bridge fills the sink): a refusal keeps it so
    rig.execute("a", "select sync.pause('items', 'seeding')")
    assert _cli(rig).returncode == 2
    assert rig.query("a", "select paused_reason from sync.link_control") == [("seeding",)]


def test_a_sql_server_side_is_refused_with_the_reason():
    cfg = config_mod.parse({
        "peers": {"portal": {"dialect": "postgres", "dsn": "postgresql://x/portal"},
                  "clinic": {"dialect": "sqlserver", "dsn": "mssql://sa:pw@nowhere/clinic"}},
        "links": [{"name": "items", "a": {"peer": "portal", "table": "items"},
                   "b": {"peer": "clinic", "table": "dbo.items"}, "key": ["id"],
                   "direction": "a_to_b"}]})
    with pytest.raises(seed.Refused, match="side b is on a sqlserver peer"):
        seed.directions(cfg, cfg.links["items"])


def test_a_two_way_seed_records_base_images_and_drops_the_sinks_old_signals(new_db, tmp_path):
    r = make_rig(new_db, tmp_path, "create table t (id int primary key, v text);",
                 [link("t", "t", ["id"], "both")])
    try:
        r.execute("a", "insert into t select g, 'a' || g from generate_series(1, 3000) g")
        r.execute("b", "insert into t values (1, 'old'); truncate t")  # queued on b: K and T
        assert r.query("b", "select count(*) from sync.queue") == [(2,)]
        run = seed.seed(r.config, shapes(r.config, ["t"])["t"], chunk_rows=1000,
                        progress=False)
        assert len(run.sink_signals) == 2
        # the copy sent nothing back, and b's truncate from before the copy is gone
        assert r.query("b", "select count(*) from sync.queue") == [(0,)]
        assert r.query("a", "select count(*) from sync.row_state where image is not null"
                       ) == [(3000,)]
        r.start_bridge()
        r.execute("b", "update t set v = 'changed on b' where id <= 5")
        r.wait_drained()
        r.wait_equal({"t": ["id"]})
        assert r.query("a", "select count(*) from sync.conflicts") == [(0,)]
        assert r.query("a", "select count(*) from t where v = 'changed on b'") == [(5,)]
    finally:
        r.close()


def test_a_bridge_write_during_the_copy_fails_the_seed_and_keeps_the_link_paused(rig):
    def bridge_wrote(run) -> None:  # what a bridge that ignored the pause leaves on the sink
        if len(run.done) == 1:
            rig.execute("b", "insert into sync.applied_batches (batch_id, link, source_side, "
                             "signals, upserts, deletes) values (gen_random_uuid(), 'items', "
                             "'a', 1, 1, 0)")

    shape = shapes(rig.config, ["items"])["items"]
    with pytest.raises(seed.Unvouched, match="1 batch"):
        seed.seed(rig.config, shape, chunk_rows=20_000, progress=False, on_chunk=bridge_wrote)
    assert rig.query("a", "select paused_reason from sync.link_control") == [("seeding",)]
    assert rig.query("b", "select status from sync.seed_runs") == [("copying",)]


def test_a_filtered_transformed_link_seeds_only_its_rows_as_read(new_db, tmp_path):
    """The seed reads the source as the link does (where, transform): a newcomer's seed
    of a filtered link copied every row, untransformed, and check then disagreed."""
    r = Rig(tmp_path, new_db("a", migrated=True), new_db("b", migrated=True), [link(
        "items", "items", ["id"], "a_to_b", where="id % 3 = 0",
        transform={"v": "upper(v)"})])
    try:
        for side in "ab":
            r.execute(side, "create table items (id int primary key, v text)")
        r.execute("a", "insert into items select g, 'row ' || g from generate_series(1, 300) g")
        r.setup()
        out = subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "--config",
                              str(r.config_path), "seed", "items", "--quiet"],
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        want = r.query("a", "select id, upper(v) from items where id % 3 = 0 order by id")
        assert r.query("b", "select id, v from items order by id") == want
        assert len(want) == 100
    finally:
        r.close()
