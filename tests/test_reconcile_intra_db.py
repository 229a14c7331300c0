"""A link whose two tables sit in one database, with other names and a column map."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from rigs import Rig
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.reconcile import check, repair
from syncbridge.engine.validate import shapes

SCHEMA = """
create table enrollments (
    user_id     int not null,
    course_id   int not null,
    status      text not null,
    enrolled_at timestamptz not null default now(),
    primary key (user_id, course_id)
);
create table student_progress (
    student_id  int not null,
    course_id   int not null,
    state       text not null,
    percent     numeric(5,2) not null default 0,
    primary key (student_id, course_id)
);
"""
LINK = {"name": "progress", "a": {"peer": "a", "table": "enrollments"},
        "b": {"peer": "a", "table": "student_progress"}, "key": ["user_id", "course_id"],
        "columns": {"user_id": "student_id", "course_id": "course_id", "status": "state"},
        "direction": "both"}
A_ROWS = "select user_id, course_id, status from enrollments order by 1, 2"
B_ROWS = "select student_id, course_id, state from student_progress order by 1, 2"


@pytest.fixture
def rig(new_db, tmp_path):
    dsn = new_db("one")
    r = Rig(tmp_path, dsn, dsn, [LINK])
    r.execute("a", SCHEMA)
    r.setup()
    r.start_bridge()
    yield r
    r.close()


def _same(rig: Rig) -> bool:
    return rig.query("a", A_ROWS) == rig.query("a", B_ROWS)


def _check(rig: Rig):
    cfg = rig.config
    [res] = asyncio.run(check.check_all(cfg, shapes(cfg, ["progress"]), [], settle=10))
    return res


def test_syncs_both_ways_without_echo(rig):
    rig.execute("a", "insert into enrollments (user_id, course_id, status) "
                     "select u, c, 'active' from generate_series(1, 30) u, generate_series(1, 3) c")
    wait_until(lambda: _same(rig), 30, "student_progress to follow enrollments")
    rig.execute("a", "update student_progress set state = 'done', percent = 100 "
                     "where course_id = 2")
    wait_until(lambda: rig.query("a", "select count(*) from enrollments where status = 'done'")
               == [(30,)], 30, "enrollments to follow student_progress")
    rig.wait_drained()
    # one batch each way per statement at most, and nothing bounced back
    by_side = dict(rig.query("a", "select source_side, sum(upserts) from sync.applied_batches "
                                  "group by 1"))
    assert by_side == {"a": 90, "b": 30}
    assert rig.query("a", "select count(*) from sync.queue") == [(0,)]
    assert _check(rig).verdict == "equal"


def test_check_and_repair_with_a_column_map(rig):
    rig.execute("a", "insert into enrollments (user_id, course_id, status) "
                     "select u, 1, 'active' from generate_series(1, 200) u")
    wait_until(lambda: _same(rig), 30, "first sync")
    rig.wait_drained()
    with psycopg.connect(rig.dsn["a"], autocommit=True) as c, c.transaction():
        c.execute("select set_config('syncbridge.origin', 'progress:a', true)")  # no capture
        c.execute("update student_progress set state = 'lost' where student_id in (3, 4)")
        c.execute("update student_progress set percent = 50 where student_id = 5")  # not linked
        c.execute("delete from student_progress where student_id = 6")
        c.execute("insert into student_progress values (999, 1, 'stray', 0)")
    res = _check(rig)
    found = sorted((d.kind, d.key_a["user_id"], d.key_b["student_id"], tuple(d.columns))
                   for d in res.diffs)
    assert found == [("different", 3, 3, ("status",)), ("different", 4, 4, ("status",)),
                     ("missing_on_a", 999, 999, ()), ("missing_on_b", 6, 6, ())]
    done = repair.repair(rig.config, "progress", prefer="b")
    assert (done.side, done.signalled) == ("b", 4)
    wait_until(lambda: _same(rig), 30, "repair to land")
    rig.wait_drained()
    assert rig.query("a", "select status from enrollments where user_id = 3") == [("lost",)]
    assert rig.query("a", "select count(*) from enrollments where user_id in (6, 999)") == [(1,)]
    assert _check(rig).verdict == "equal"
