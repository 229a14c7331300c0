"""Postgres <-> Postgres behaviour: every change kind, every type, both directions."""

from __future__ import annotations

import threading
from decimal import Decimal

import psycopg
import pytest

from rigs import link, make_rig

ALL_TYPES = """
create table things (
    id      uuid primary key,
    label   text,
    vc      varchar(40),
    flag    boolean,
    small   smallint,
    medium  integer,
    big     bigint,
    money   numeric(20,6),
    r4      real,
    r8      double precision,
    ts      timestamp,
    tstz    timestamptz,
    d       date,
    t       time,
    blob    bytea,
    doc     jsonb
);
"""
ROW = {
    "id": "6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0001", "label": "Zoë 李 ✓ \t 'quoted'",
    "vc": "", "flag": True, "small": -32768, "medium": 2147483647, "big": -9223372036854775808,
    "money": Decimal("12345678901234.123456"), "r4": 3.1415927, "r8": 2.718281828459045,
    "ts": "2024-02-29 23:59:59.999999", "tstz": "2024-05-01 10:00:00.123456+02",
    "d": "0001-01-01", "t": "23:59:59.999999", "blob": b"\x00\xff\x10\x00",
    "doc": '{"b": [1, 2.50, null], "a": {"ü": "x"}}',
}
COLS = ", ".join(ROW)
PLACE = ", ".join(f"%({k})s" for k in ROW)


@pytest.fixture
def rig(new_db, tmp_path):
    r = make_rig(new_db, tmp_path, ALL_TYPES, [link("things", "things", ["id"])])
    r.start_bridge()
    yield r
    r.close()


def other(side: str) -> str:
    return "b" if side == "a" else "a"


@pytest.mark.parametrize("side", ["a", "b"])
def test_every_change_kind_and_type_round_trips(rig, side):
    key = {"id": ["id"]}
    rig.execute(side, f"insert into things ({COLS}) values ({PLACE})", ROW)
    rig.execute(side, "insert into things (id) values ('6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0002')")
    rig.wait_equal({"things": key["id"]})
    got = rig.rows(other(side), "things", ["id"])
    assert got[0][7] == Decimal("12345678901234.123456")  # numeric scale kept
    assert got[0][14] == b"\x00\xff\x10\x00"
    assert all(v is None for v in got[1][1:])  # NULLs stay NULL, not ''
    rig.execute(side, "update things set label = 'changed', doc = '{}' where label is not null")
    rig.wait_equal({"things": key["id"]})
    rig.execute(side, "update things set id = '6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0009' "
                      "where id = '6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0001'")  # key change
    rig.wait_equal({"things": key["id"]})
    ids = [str(r[0]) for r in rig.rows(other(side), "things", ["id"])]
    assert ids == ["6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0002", "6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0009"]
    rig.execute(side, "delete from things where id = '6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0002'")
    rig.wait_equal({"things": key["id"]})
    assert len(rig.rows(other(side), "things", ["id"])) == 1
    rig.execute(side, "truncate things")
    rig.execute(side, "insert into things (id, label) values "
                      "('6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0003', 'after truncate')")
    rig.wait_equal({"things": key["id"]})
    assert [r[1] for r in rig.rows(other(side), "things", ["id"])] == ["after truncate"]


def test_one_write_is_applied_exactly_once(rig):
    rig.execute("a", "insert into things (id, label) values "
                     "('6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0001', 'once')")
    rig.wait_equal({"things": ["id"]})
    rig.wait_drained()
    applied_b = rig.query("b", "select count(*), sum(upserts) from sync.applied_batches")
    applied_a = rig.query("a", "select count(*) from sync.applied_batches")
    assert applied_b == [(1, 1)]
    assert applied_a == [(0,)], "the bridge's own write on b was sent back to a"
    # and the echo was never even queued on b
    assert rig.query("b", "select count(*) from sync.queue") == [(0,)]


def test_concurrent_writers_on_both_sides(rig):
    def writer(side: str, start: int) -> None:
        with psycopg.connect(rig.dsn[side], autocommit=True) as c:
            for i in range(start, start + 150):
                uid = f"00000000-0000-0000-0000-{i:012d}"
                c.execute("insert into things (id, medium) values (%s, %s)", (uid, i))
                if i % 3 == 0:
                    c.execute("update things set label = %s where id = %s", (f"u{i}", uid))
                if i % 10 == 0:
                    c.execute("delete from things where id = %s", (uid,))

    threads = [threading.Thread(target=writer, args=(s, n))
               for s, n in (("a", 0), ("a", 1000), ("b", 2000), ("b", 3000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rig.wait_equal({"things": ["id"]}, 60)
    assert len(rig.rows("a", "things", ["id"])) == 4 * 135


def test_many_updates_to_one_key_end_with_the_last(rig):
    uid = "6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0001"
    with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
        c.execute("insert into things (id, medium) values (%s, 0)", (uid,))
        for i in range(1, 301):
            c.execute("update things set medium = %s where id = %s", (i, uid))
    rig.wait_drained()
    rig.wait_equal({"things": ["id"]})
    assert rig.rows("b", "things", ["id"])[0][5] == 300


def test_application_role_needs_no_grant_on_the_queue(rig):
    rig.execute("a", "drop role if exists clinic_app; create role clinic_app login; "
                     "grant usage on schema public to clinic_app; "
                     "grant select, insert, update, delete on things to clinic_app")
    try:
        with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
            c.execute("set role clinic_app")
            c.execute("insert into things (id, label) values "
                      "('6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0042', 'by the app')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("select count(*) from sync.queue")
        rig.wait_equal({"things": ["id"]})
        assert rig.rows("b", "things", ["id"])[0][1] == "by the app"
    finally:
        rig.execute("a", "drop owned by clinic_app; drop role clinic_app")
