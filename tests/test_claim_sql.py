"""The claim and the take at the SQL level: two sessions stepped by hand (pgmq's
transaction_tests.spec, STYLE.md 12).

The statements are the bridge's own `claim` (the SQL Server sink marks a batch)
and `take` / `take_ids` (a Postgres sink holds a batch: its signals deleted in a
transaction committed after the sink's) from sql/postgres/queue.sql, loaded
with the project's query loader and PREPAREd in each session, so these tests
run exactly what the drains run. Signals come from the real capture triggers
(installed by make_rig), so "the capturing transaction" is a write to a
captured table.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from rigs import link, make_rig
from syncbridge.engine import sqlfiles
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.validate import shapes

SCHEMA = "create table items (id int primary key, v text);"
CLAIM = sqlfiles.query("postgres/queue.sql", "claim")
TAKE = pg_sql.take()  # as the drain runs it for a large batch (drain.py TAKE)
TAKE_IDS = sqlfiles.query("postgres/queue.sql", "take_ids")


@pytest.fixture
def rig(new_db, tmp_path):
    r = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")])
    yield r
    r.close()


@pytest.fixture
def session(rig) -> Iterator:
    """Factory: a new connection to side a with the claim PREPAREd as `claim`."""
    opened: list[psycopg.Connection] = []

    def make(autocommit: bool = False) -> psycopg.Connection:
        conn = psycopg.connect(rig.dsn["a"], autocommit=autocommit)
        # a claim that would wait on another session's lock fails instead of hanging
        conn.execute("set lock_timeout = '5s'")
        conn.execute("prepare claim as " + CLAIM)
        conn.execute("prepare take as " + TAKE)
        conn.execute("prepare take_ids as " + TAKE_IDS)
        if not autocommit:
            conn.commit()
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


def claim(conn: psycopg.Connection, limit: int = 100) -> tuple[uuid.UUID, list[dict]]:
    """Run the bridge's claim for link items, side a, as one new batch."""
    batch = uuid.uuid4()
    # EXECUTE takes no bind parameters: its arguments go in as quoted literals
    args = sql.SQL(", ").join(sql.Literal(v) for v in ("items", "a", limit, batch))
    rows = conn.execute(sql.SQL("execute claim({})").format(args)).fetchall()
    return batch, [{"id": r[0], "op": r[1], "key": r[2], "attempts": r[3]} for r in rows]


def keys(claimed: list[dict]) -> list[str]:
    return sorted(r["key"] for r in claimed)


def batches(rig) -> dict[uuid.UUID | None, list[int]]:
    out: dict[uuid.UUID | None, list[int]] = {}
    for batch_id, key_id in rig.query("a", "select batch_id, (key ->> 'id')::int "
                                           "from sync.queue order by id"):
        out.setdefault(batch_id, []).append(key_id)
    return out


def test_signals_are_invisible_until_the_capturing_transaction_commits(rig, session):
    writer, claimer = session(), session(autocommit=True)
    writer.execute("insert into items select g, 'v' from generate_series(1, 3) g")
    assert claim(claimer)[1] == [], "uncommitted signals must not be claimed"
    writer.commit()
    batch, got = claim(claimer)
    assert keys(got) == ['{"id": 1}', '{"id": 2}', '{"id": 3}']
    assert {(r["op"], r["attempts"]) for r in got} == {("K", 0)}
    assert claim(claimer)[1] == [], "a claimed signal is not claimed again"
    assert batches(rig) == {batch: [1, 2, 3]}


def test_a_rolled_back_write_leaves_no_signal(rig, session):
    writer, claimer = session(), session(autocommit=True)
    writer.execute("insert into items values (1, 'x')")
    writer.rollback()
    assert claim(claimer)[1] == []
    assert rig.query("a", "select count(*) from sync.queue") == [(0,)]


def test_concurrent_claims_skip_each_others_locked_signals(rig, session):
    rig.execute("a", "insert into items select g, 'v' from generate_series(1, 10) g")
    first, second = session(), session()
    batch1, got1 = claim(first, limit=4)  # open transaction: its 4 rows stay locked
    assert len(got1) == 4
    # the second claim neither waits for the first (lock_timeout would fail it) nor
    # takes its rows: it sees them unclaimed in its snapshot, but locked
    batch2, got2 = claim(second)
    assert len(got2) == 6 and not set(keys(got1)) & set(keys(got2))
    first.commit()
    second.commit()
    assert batches(rig) == {batch1: [1, 2, 3, 4], batch2: [5, 6, 7, 8, 9, 10]}
    third = session(autocommit=True)
    assert claim(third)[1] == [], "every signal is claimed exactly once"


def test_a_claim_committed_meanwhile_is_not_claimed_again(rig, session):
    rig.execute("a", "insert into items select g, 'v' from generate_series(1, 5) g")
    first, second = session(), session()
    second.execute("select 1")  # the second session's transaction is already open
    batch1, got1 = claim(first, limit=2)
    first.commit()
    batch2, got2 = claim(second)
    second.commit()
    assert (len(got1), len(got2)) == (2, 3) and not set(keys(got1)) & set(keys(got2))
    assert batches(rig) == {batch1: [1, 2], batch2: [3, 4, 5]}


def test_a_rolled_back_claim_gives_its_signals_back(rig, session):
    rig.execute("a", "insert into items select g, 'v' from generate_series(1, 3) g")
    first, second = session(), session(autocommit=True)
    _, got1 = claim(first)
    assert len(got1) == 3
    assert claim(second)[1] == [], "all three are locked by the first claim"
    first.rollback()  # the claimer died before committing its claim
    batch, got2 = claim(second)
    assert keys(got2) == keys(got1)
    assert batches(rig) == {batch: [1, 2, 3]}


def take(conn: psycopg.Connection, limit: int = 100, floor: int = 0) -> list[int]:
    """Run the bridge's take for link items, side a, above a queue id floor: the keys'
    ids it deleted."""
    args = sql.SQL(", ").join(sql.Literal(v) for v in ("items", "a", limit, "public.items",
                                                        floor))
    rows = conn.execute(sql.SQL("execute take({})").format(args)).fetchall()
    return sorted(json.loads(r[2])["id"] for r in rows)


def queued(rig) -> list[int]:
    return [r[0] for r in rig.query("a", "select (key ->> 'id')::int from sync.queue order by id")]


def test_a_held_take_hides_its_signals_until_it_commits_or_rolls_back(rig, session):
    rig.execute("a", "insert into items select g, 'v' from generate_series(1, 10) g")
    first, second = session(), session()
    assert take(first, limit=4) == [1, 2, 3, 4]  # held: deleted, not committed
    # the second take neither waits (lock_timeout would fail it) nor takes the held rows
    assert take(second) == [5, 6, 7, 8, 9, 10]
    second.rollback()  # gives its six back
    assert queued(rig) == list(range(1, 11)), "a held take deletes nothing yet"
    first.rollback()  # the bridge died before the sink committed
    assert take(second) == list(range(1, 11)), "every signal is back, none lost"
    second.commit()
    assert queued(rig) == [] and take(session(autocommit=True)) == []


def test_a_committed_take_is_not_taken_again(rig, session):
    rig.execute("a", "insert into items select g, 'v' from generate_series(1, 5) g")
    first, second = session(), session()
    second.execute("select 1")  # the second session's transaction is already open
    assert take(first, limit=2) == [1, 2]
    first.commit()
    assert take(second) == [3, 4, 5]
    second.commit()
    assert queued(rig) == []


def test_recovery_waits_for_a_held_take_instead_of_skipping_it(rig, session):
    """take_ids (recovery of a batch the sink applied) must learn the held batch's
    fate: a lock wait, never a skip, then exactly the ids asked for."""
    rig.execute("a", "insert into items select g, 'v' from generate_series(1, 4) g")
    ids = [r[0] for r in rig.query("a", "select id from sync.queue order by id")]
    first, recovery = session(), session()
    assert take(first, limit=2) == [1, 2]
    span = f"{{[{ids[0]},{ids[1] + 1})}}"
    args = sql.SQL(", ").join(sql.Literal(v) for v in ("items", "a", span))
    recovery.execute("set lock_timeout = '200ms'")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        recovery.execute(sql.SQL("execute take_ids({})").format(args))
    recovery.rollback()
    first.rollback()
    recovery.execute("set lock_timeout = '5s'")
    got = recovery.execute(sql.SQL("execute take_ids({})").format(args)).fetchall()
    assert sorted(json.loads(r[2])["id"] for r in got) == [1, 2]
    recovery.commit()
    assert queued(rig) == [3, 4]


def test_a_take_above_a_floor_leaves_the_lower_ids_for_a_take_without_one(rig, session):
    rig.execute("a", "insert into items select g, 'v' from generate_series(1, 6) g")
    ids = [r[0] for r in rig.query("a", "select id from sync.queue order by id")]
    first = session()
    assert take(first, floor=ids[2]) == [4, 5, 6]
    first.commit()
    assert take(first) == [1, 2, 3]
    first.commit()
    assert queued(rig) == []


def test_a_small_take_reads_its_rows_by_key_not_by_a_scan_of_the_table(rig):
    """take_rows runs as a prepared statement whose generic plan guesses 100 keys: as a
    plain join it hashed a seq scan of a table of a few thousand rows at every take, the
    largest part of a one-row take (issue 16). Its read is one primary-key lookup a key,
    and still reads a missing row as absent."""
    rig.execute("a", "insert into items select g, 'v' from generate_series(1, 5000) g")
    rig.execute("a", "delete from sync.queue")
    rig.execute("a", "analyze items")
    rig.execute("a", "update items set v = 'changed' where id = 7")
    rig.execute("a", "delete from items where id = 8")
    take_rows = pg_sql.render(shapes(rig.config)["items"], "a", "b").take_rows
    with psycopg.connect(rig.dsn["a"]) as conn:
        conn.execute("set plan_cache_mode = force_generic_plan")  # as asyncpg's run is
        conn.execute("prepare take_rows as " + take_rows)
        args = "'items', 'a', 10, 'public.items', 0, 100"
        plan = "\n".join(r[0] for r in conn.execute(
            f"explain (analyze, costs off) execute take_rows({args})"))
        conn.rollback()
        assert "Seq Scan on items" not in plan, plan
        assert "Index Scan using items_pkey on items" in plan, plan
        taken = conn.execute(f"execute take_rows({args})").fetchall()
    rows = {json.loads(r[1])["id"]: r[0] for r in taken[0][-1]}
    assert [t[2] for t in taken] == ['{"id": 7}', '{"id": 8}']
    assert rows[8] is None and json.loads(rows[7])["v"] == "changed"
