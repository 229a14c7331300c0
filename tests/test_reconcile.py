"""`syncbridge check` and `repair` against real PostgreSQL: exact drift, no false
positives, changes in flight, direction, rules."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading

import psycopg
import pytest

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.config import ConfigError
from syncbridge.engine.reconcile import check, ranges, repair
from syncbridge.engine.validate import shapes

TYPES = """
create table things (
    id      int primary key,
    label   text,
    flag    boolean,
    amount  numeric,
    ratio   double precision,
    ts      timestamp,
    tstz    timestamptz,
    d       date,
    blob    bytea,
    doc     jsonb,
    u       uuid
);
"""
ROWS = 3000


def _quiet(rig, side: str, link_name: str, statement: str, params=None) -> None:
    """Write on one side as if it were the bridge's apply: capture does not signal it."""
    other = "b" if side == "a" else "a"
    with psycopg.connect(rig.dsn[side], autocommit=True) as c, c.transaction():
        c.execute("select set_config('syncbridge.origin', %s, true)", (f"{link_name}:{other}",))
        c.execute(statement, params)


def _fill(rig, link_name: str = "things") -> None:
    stmt = ("insert into things select g, 'label ' || g || ' Zoë ✓', g %% 2 = 0, g / 4.0, "
            "g / 3.0, '2024-01-01'::timestamp + g * interval '1.000001 second', "
            "'2024-01-01 00:00+00'::timestamptz + g * interval '1 minute', "
            "'2024-01-01'::date + g, '\\x00ff'::bytea || g::text::bytea, "
            "jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)), "
            "md5(g::text)::uuid from generate_series(1, %s) g")
    for side in ("a", "b"):
        _quiet(rig, side, link_name, stmt, (ROWS,))


def _check(rig, names=None, settle: float = 10.0, chunk_rows: int = 500):
    config = rig.config
    links = [n for n in (names or list(config.links)) if n in config.links]
    rules = [n for n in (names or list(check.rules(config))) if n in check.rules(config)]
    return asyncio.run(check.check_all(config, shapes(config, links) if links else {}, rules,
                                       settle=settle, chunk_rows=chunk_rows))


@pytest.fixture
def small_leaves(monkeypatch):
    monkeypatch.setattr(ranges, "LEAF_ROWS", 40)  # make ranges bisect several levels


@pytest.fixture
def rig(new_db, tmp_path):
    r = make_rig(new_db, tmp_path, TYPES, [link("things", "things", ["id"], "a_to_b")])
    _fill(r)
    yield r
    r.close()


def test_equal_tables_with_differently_spelled_values_are_equal(rig, small_leaves):
    rig.execute("a", f"alter database {rig.dsn['a'].rsplit('/', 1)[1]} set timezone = 'UTC'")
    rig.execute("b", f"alter database {rig.dsn['b'].rsplit('/', 1)[1]} "
                     "set timezone = 'Asia/Kathmandu'")
    same = [  # (a literal, b literal) pairs holding the same value
        ("tstz", "'2024-05-01 10:00:00.123456+02'", "'2024-05-01 03:00:00.123456-05'"),
        ("doc", """'{"a": 1, "b": {"x": [1, "é"]}}'""", """'{"b": {"x": [1, "é"]}, "a": 1}'"""),
        ("label", "''", "''"), ("label", "'李 \t ✓'", "'李 \t ✓'"),
        ("blob", "'\\x00'", "'\\x00'"), ("u", "'6F1C0A52-8D0E-4A55-B7D6-2D9E9C1B0001'",
                                         "'6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0001'"),
    ]
    for i, (col, va, vb) in enumerate(same, start=1):
        _quiet(rig, "a", "things", f"update things set {col} = {va} where id = {i}")
        _quiet(rig, "b", "things", f"update things set {col} = {vb} where id = {i}")
    [res] = _check(rig)
    assert (res.verdict, res.rows_a, res.rows_b) == ("equal", ROWS, ROWS), res.diffs
    # and NULL vs '' is a difference, named by column, as is a numeric's scale
    _quiet(rig, "a", "things", "update things set label = '' where id = 20")
    _quiet(rig, "b", "things", "update things set label = null where id = 20")
    _quiet(rig, "a", "things", "update things set amount = 1.5 where id = 21")
    _quiet(rig, "b", "things", "update things set amount = 1.50 where id = 21")
    [res] = _check(rig)
    diffs = sorted(res.diffs, key=lambda d: d.key_a["id"])
    assert [(d.kind, d.key_a, d.columns) for d in diffs] == [
        ("different", {"id": 20}, ["label"]), ("different", {"id": 21}, ["amount"])]
    assert diffs[0].detail == {"a": {"label": ""}, "b": {"label": None}}
    assert diffs[1].detail == {"a": {"amount": "1.5"}, "b": {"amount": "1.50"}}


def test_seeded_random_drift_is_found_exactly(rig, small_leaves):
    rnd = random.Random(20261125)
    ids = rnd.sample(range(1, ROWS + 1), 60)
    expected: dict[int, tuple[str, tuple[str, ...]]] = {}
    changes = [("label", "'drift'"), ("flag", "not flag"), ("amount", "amount + 0.01"),
               ("ratio", "ratio * 2"), ("ts", "ts + interval '1 microsecond'"),
               ("tstz", "tstz + interval '1 microsecond'"), ("d", "d + 1"),
               ("blob", "blob || '\\x00'::bytea"), ("doc", "doc || '{\"z\": 1}'"),
               ("u", "gen_random_uuid()"), ("label", "null")]
    for n, i in enumerate(ids):
        kind = n % 4
        if kind == 0:
            _quiet(rig, "a", "things", "delete from things where id = %s", (i,))
            expected[i] = ("missing_on_a", ())
        elif kind == 1:
            _quiet(rig, "b", "things", "delete from things where id = %s", (i,))
            expected[i] = ("missing_on_b", ())
        else:
            picked = rnd.sample(changes, rnd.randint(1, 3))
            cols = tuple(sorted({c for c, _ in picked}))
            sets = ", ".join(f"{c} = {e}" for c, e in {c: e for c, e in picked}.items())
            _quiet(rig, rnd.choice("ab"), "things", f"update things set {sets} where id = %s",
                   (i,))
            expected[i] = ("different", cols)
    for extra, side, kind in ((ROWS + 10, "a", "missing_on_b"), (ROWS + 11, "b", "missing_on_a"),
                              (-5, "b", "missing_on_a")):
        _quiet(rig, side, "things", "insert into things (id) values (%s)", (extra,))
        expected[extra] = (kind, ())
    [res] = _check(rig)
    found = {d.key_a["id"]: (d.kind, tuple(sorted(d.columns))) for d in res.diffs}
    assert found == expected
    assert res.verdict == "different" and res.in_flight == 0
    assert (res.rows_a, res.rows_b) == (ROWS - 15 + 1, ROWS - 15 + 2)
    stored = rig.query("a", "select verdict, missing_a, missing_b, different from "
                            "sync.check_runs where id = %s", (res.run_id,))
    assert stored == [("different", 17, 16, 30)]
    assert rig.query("a", "select count(*) from sync.check_diffs where run_id = %s",
                     (res.run_id,)) == [(63,)]
    assert rig.query("a", "select kind, verdict, run_id from sync.check_status "
                          "where name = 'things'") == [("link", "different", res.run_id)]
    # sync.status lists a link once the bridge has sampled it: give it that sample row
    rig.execute("a", "insert into sync.link_state (link, source_side) values ('things', 'a')")
    [(last_check,)] = rig.query("a", "select last_check from sync.status where link = 'things'")
    assert last_check is not None and last_check.startswith("different "), last_check


def test_repair_respects_a_one_way_link_and_makes_the_next_check_clean(rig, small_leaves):
    _quiet(rig, "b", "things", "update things set label = 'b drifted' where id < 20")
    _quiet(rig, "b", "things", "delete from things where id between 100 and 110")
    _quiet(rig, "b", "things", "insert into things (id, label) values (-1, 'only on b')")
    [res] = _check(rig)
    assert (res.count("different"), res.count("missing_on_b"), res.count("missing_on_a")) == (
        19, 11, 1)
    with pytest.raises(ConfigError, match="one-way"):
        repair.repair(rig.config, "things", prefer="b")
    done = repair.repair(rig.config, "things")
    assert (done.side, done.signalled) == ("a", 31)
    assert rig.query("a", "select count(*) from sync.queue where side = 'a'") == [(31,)]
    assert rig.query("b", "select count(*) from sync.queue") == [(0,)]
    rig.start_bridge()
    rig.wait_drained(60)  # the bridge's start, too
    [res] = _check(rig)
    assert res.verdict == "equal", res.diffs
    assert rig.rows("b", "things", ["id"])[0][0] == 1  # the b-only row is gone: a won


def test_changes_in_flight_are_waited_for_not_reported(rig):
    """Signals queued while the check runs: the check waits for them, then equal.

    The bridge runs with the link paused, so the keys stay queued for as long as the
    check is observed waiting (a stopped bridge would end the wait after
    NO_BRIDGE_GRACE, which made this test depend on how fast a bridge starts)."""
    rig.execute("a", "select sync.pause('things', 'held by the test')")
    rig.start_bridge()
    _active_bridge(rig)
    with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
        c.execute("update things set label = 'in flight' where id % 100 = 0")
        c.execute("delete from things where id between 500 and 505")
        c.execute("insert into things (id, label) values (-7, 'new')")
    results: list = []
    t = threading.Thread(target=lambda: results.extend(_check(rig, settle=60)))
    t.start()
    # the check found the changed keys and now asks the queue about them (queued_keys)
    # every 0.1 s; the pool resets a released connection's query text, so look often
    wait_until(lambda: rig.query("a", "select count(*) from pg_stat_activity where "
                                      "application_name = 'syncbridge-check' and "
                                      "datname = current_database() and "
                                      "query like '%q.key = any%'")[0][0] > 0,
               30, "the check to wait on the queued keys", every=0.01)
    assert t.is_alive(), "the check must wait for the queued keys, not finish"
    assert rig.query("b", "select count(*) from sync.applied_batches") == [(0,)]
    rig.execute("a", "select sync.resume('things')")
    t.join(60)
    assert not t.is_alive(), "the check must finish once the bridge drained the queue"
    [res] = results
    assert res.verdict == "equal" and res.in_flight == 0, res.diffs
    # it finished only after the bridge applied the keys it was waiting for
    [(finished,)] = rig.query("a", "select finished_at from sync.check_runs where id = %s",
                              (res.run_id,))
    [(applied,)] = rig.query("b", "select max(applied_at) from sync.applied_batches")
    assert applied is not None and finished > applied, (finished, applied)


def _active_bridge(rig) -> None:
    """Wait for the started bridge to lead: a check that runs before it beats waits for
    queued keys only NO_BRIDGE_GRACE, then reports them as in flight."""
    wait_until(lambda: rig.query("a", "select count(*) from sync.bridges where role = "
                                      "'active'")[0][0] == 1, 60, "an active bridge")


def test_concurrent_writes_during_a_check_are_not_reported(rig, small_leaves):
    rig.start_bridge()
    _active_bridge(rig)  # was: the check could start first (the CI flake's twin)
    stop = threading.Event()

    def writer() -> None:
        rnd = random.Random(7)
        with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
            while not stop.is_set():
                i = rnd.randint(1, ROWS)
                c.execute("update things set amount = amount + 1, doc = doc || %s "
                          "where id = %s", (json.dumps({"w": rnd.random()}), i))

    t = threading.Thread(target=writer)
    t.start()
    try:
        results = [_check(rig, settle=30)[0] for _ in range(2)]
    finally:
        stop.set()
        t.join()
    assert [r.verdict for r in results] == ["equal", "equal"], [r.diffs for r in results]


def test_rule_reports_its_violating_rows(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, TYPES, [link("things", "things", ["id"], "a_to_b")])
    try:
        text = rig.config_path.read_text() + (
            '\n[[rules]]\nname = "no_negative_amounts"\npeer = "a"\n'
            'sql = "select id, amount from things where amount < 0"\n'
            '\n[[rules]]\nname = "labels_present"\npeer = "b"\n'
            'sql = "select id from things where label is null"\n')
        rig.config_path.write_text(text)
        rig.execute("a", "insert into things (id, amount, label) values "
                         "(1, -5, 'x'), (2, 3, 'y'), (3, -0.5, 'z')")
        out = subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "--config",
                              str(rig.config_path), "check", "no_negative_amounts",
                              "labels_present", "--json"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 1, out.stderr
        got = {r["name"]: r for r in json.loads(out.stdout)}
        assert got["no_negative_amounts"]["verdict"] == "violated"
        assert sorted(d["detail"]["id"] for d in got["no_negative_amounts"]["diffs"]) == [1, 3]
        assert got["labels_present"]["verdict"] == "ok"
        assert rig.query("a", "select kind, name, verdict, violations from sync.check_status "
                              "order by name") == [
            ("rule", "labels_present", "ok", 0), ("rule", "no_negative_amounts", "violated", 2)]
    finally:
        rig.close()


def test_check_cli_exit_codes(rig):
    run = [sys.executable, "-m", "syncbridge.bridge.cli", "--config", str(rig.config_path),
           "check", "things"]
    assert subprocess.run(run, capture_output=True, timeout=60).returncode == 0
    _quiet(rig, "b", "things", "delete from things where id = 1")
    out = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "missing on b 1" in out.stdout, out.stdout
    rig.execute("b", "alter table things rename to gone")
    assert subprocess.run(run, capture_output=True, timeout=60).returncode == 2
