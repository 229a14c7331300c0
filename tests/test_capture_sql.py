"""Capture triggers at the SQL level: each statement against a captured table,
and exactly the sync.queue rows it must leave (PgQ's sql/trigger_base.sql with
its expected output, STYLE.md 12).

Capture is installed the way `syncbridge install` does it (make_rig); each
step runs one statement in its own transaction and compares the queue rows
that statement added with the expected (link, side, op, key, origin) rows.
Within one statement the order of rows is not defined, so both sides of the
comparison are sorted.
"""

from __future__ import annotations

import psycopg
import pytest

from rigs import link, make_rig

SCHEMA = """
create table items (id int primary key, v text);
create table visits (patient int, n int, note text, primary key (patient, n));
"""


class Queue:
    """Reads the queue rows added since the last read (side a)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.seen = 0

    def added(self) -> list[tuple]:
        with psycopg.connect(self.dsn) as c:
            rows = c.execute("select id, link, side, op, key, origin from sync.queue "
                             "where id > %s order by id", (self.seen,)).fetchall()
        if rows:
            self.seen = rows[-1][0]
        return sorted((r[1:] for r in rows), key=repr)


@pytest.fixture
def rig(new_db, tmp_path):
    r = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b"),
                                            link("visits", "visits", ["patient", "n"],
                                                 "a_to_b")])
    yield r
    r.close()


def K(key_id: int, origin: str | None = None) -> tuple:
    return ("items", "a", "K", {"id": key_id}, origin)


def test_each_statement_queues_exactly_its_keys(rig):
    q = Queue(rig.dsn["a"])
    steps = [
        ("insert into items values (1, 'a'), (2, 'b'), (3, 'c')", [K(1), K(2), K(3)]),
        # old and new keys are the same here: one signal per key, not two
        ("update items set v = v || '!' where id <= 2", [K(1), K(2)]),
        ("update items set v = 'none' where id = 99", []),
        # a changed key signals the new key (to upsert) and the old one (to delete)
        ("update items set id = 30 where id = 3", [K(3), K(30)]),
        ("update items set id = id + 100 where id in (1, 2)", [K(1), K(2), K(101), K(102)]),
        ("delete from items where id in (101, 30)", [K(30), K(101)]),
        ("delete from items where id = 99", []),
        ("truncate items", [("items", "a", "T", None, None)]),
        ("insert into visits values (7, 1, 'x'), (7, 2, 'y')",
         [("visits", "a", "K", {"patient": 7, "n": 1}, None),
          ("visits", "a", "K", {"patient": 7, "n": 2}, None)]),
    ]
    for statement, expected in steps:
        rig.execute("a", statement)
        assert q.added() == sorted(expected, key=repr), statement
    assert rig.query("a", "select count(*) from sync.queue where batch_id is not null") == [(0,)]


def test_two_statements_in_one_transaction_queue_two_sets(rig):
    q = Queue(rig.dsn["a"])
    with psycopg.connect(rig.dsn["a"]) as c:
        c.execute("insert into items values (1, 'a')")
        c.execute("update items set v = 'b' where id = 1")
    assert q.added() == [K(1), K(1)]


def test_the_bridges_own_writes_are_not_queued_but_other_origins_are(rig):
    q = Queue(rig.dsn["a"])

    def write(origin: str, statement: str) -> None:
        with psycopg.connect(rig.dsn["a"]) as c:
            c.execute("select set_config('syncbridge.origin', %s, true)", (origin,))
            c.execute(statement)

    # "items:b" is what the bridge sets when it applies changes that came from b
    write("items:b", "insert into items values (1, 'from b')")
    write("items:b", "update items set v = 'again' where id = 1")
    write("items:b", "delete from items where id = 1")
    write("items:b", "truncate items")
    assert q.added() == [], "the bridge's applies must not be signalled back"
    # the echo tag is per link: another link's origin, or any other tag, is captured
    write("visits:b", "insert into items values (2, 'x')")
    write("someapp", "insert into items values (3, 'y')")
    assert q.added() == [K(2, "visits:b"), K(3, "someapp")]
    # set_config(..., true) is local to the transaction: the next write is captured
    rig.execute("a", "insert into items values (4, 'z')")
    assert q.added() == [K(4)]


def test_capture_triggers_are_statement_level_one_per_event(rig):
    rows = rig.query("a", "select t.tgname, (t.tgtype & 1) = 1 as per_row, p.proname "
                          "from pg_trigger t join pg_proc p on p.oid = t.tgfoid "
                          "where t.tgrelid = 'public.items'::regclass and not t.tgisinternal "
                          "order by t.tgname")
    assert rows == [(f"syncbridge_items_a_{ev}", False, "capture_items_a")
                    for ev in ("del", "ins", "trn", "upd")]
