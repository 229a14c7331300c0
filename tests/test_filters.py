"""Row filters (`where`) and column transforms (`transform`) of a link, against real
PostgreSQL and a real bridge process: rows move in and out under a writer, backfill,
check and repair read the source through the same filter, refusals name the link."""

from __future__ import annotations

import asyncio
import random
import threading

import psycopg
import pytest

from rigs import TRANSPORTS, link, make_rig
from syncbridge.bridge.bench.rig import Rig, wait_until
from syncbridge.engine.config import ConfigError
from syncbridge.engine.config import load as load_config
from syncbridge.engine.postgres import session as pg_session
from syncbridge.engine.reconcile import backfill, check, repair
from syncbridge.engine.validate import shapes

SCHEMA = """
create table patients (
    id        int primary key,
    clinic_id int,
    name      text,
    email     text
);
"""
CLINIC = "clinic_id = 7"


def texts(rig: Rig, side: str, where: str = "true") -> list[tuple]:
    """The rows of one side as texts (pinned session settings), filtered, in key order."""
    with pg_session.connect(rig.dsn[side]) as c:
        return c.execute("select id::text, clinic_id::text, name, email from patients "
                         f"where {where} order by patients.id").fetchall()


def sink_holds_the_matching_rows(rig: Rig, where: str = CLINIC) -> bool:
    return texts(rig, "a", where) == texts(rig, "b")


def run_check(rig: Rig) -> check.Result:
    config = rig.config
    [res] = asyncio.run(check.check_all(config, shapes(config, ["patients"]), [], settle=10,
                                        chunk_rows=50))
    return res


def quiet(rig: Rig, side: str, statement: str) -> None:
    """A write on one side that capture does not signal (as if it were the bridge's)."""
    other = "b" if side == "a" else "a"
    with psycopg.connect(rig.dsn[side], autocommit=True) as c, c.transaction():
        c.execute("select set_config('syncbridge.origin', %s, true)", (f"patients:{other}",))
        c.execute(statement)


@pytest.fixture(params=TRANSPORTS.values(), ids=TRANSPORTS.keys())
def filtered(request, new_db, tmp_path):
    r = make_rig(new_db, tmp_path, SCHEMA,
                 [link("patients", "patients", ["id"], "a_to_b", where=CLINIC)])
    r.start_bridge(request.param)
    yield r
    r.close()


def test_rows_move_in_and_out_of_the_filter_under_a_writer(filtered):
    rig = filtered
    def writer(start: int) -> None:
        rnd = random.Random(start)
        with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
            for i in range(start, start + 200):
                c.execute("insert into patients values (%s, %s, %s, %s)",
                          (i, rnd.choice((7, 8)), f"p{i}", f"P{i}@Example.org"))
                moved = rnd.randrange(start, i + 1)  # in or out of clinic 7
                c.execute("update patients set clinic_id = 15 - clinic_id, name = name || '+' "
                          "where id = %s", (moved,))
                if i % 9 == 8:
                    c.execute("delete from patients where id = %s", (rnd.randrange(start, i),))

    threads = [threading.Thread(target=writer, args=(n,)) for n in (0, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: sink_holds_the_matching_rows(rig), 60, "b to hold a's clinic-7 rows")
    # moves both ways happened, and only matching rows are on b
    assert texts(rig, "b", "clinic_id <> 7") == []
    assert len(texts(rig, "b")) > 50
    # a row that moves out is deleted at b, one that moves back in is inserted again
    rig.execute("a", "update patients set clinic_id = 8 where id = "
                     "(select min(id) from patients where clinic_id = 7)")
    out = texts(rig, "a", "clinic_id = 8")
    wait_until(lambda: sink_holds_the_matching_rows(rig), 30, "the moved-out row to go")
    rig.execute("a", f"update patients set clinic_id = 7 where id = {out[0][0]}")
    wait_until(lambda: sink_holds_the_matching_rows(rig), 30, "the moved-in row to come")
    assert out[0][0] in [r[0] for r in texts(rig, "b")]


def test_backfill_check_and_repair_use_the_filter(new_db, tmp_path):
    before = SCHEMA + ("insert into patients select g, 7 + g % 3, 'p' || g, null "
                       "from generate_series(1, 300) g;")
    rig = make_rig(new_db, tmp_path, before,
                   [link("patients", "patients", ["id"], "a_to_b", where=CLINIC)],
                   schema_b=SCHEMA)
    try:
        rig.start_bridge()
        config = rig.config
        run = backfill.backfill(config, shapes(config, ["patients"])["patients"],
                                progress=False, chunk=40)
        assert run.total == 100 and run.signalled == 100  # the clinic-7 rows only
        wait_until(lambda: sink_holds_the_matching_rows(rig), 30, "the backfill to land")
        assert run_check(rig).verdict == "equal"  # a's other 200 rows are not differences

        rig.stop_bridge()  # drift on b: nothing repairs it behind the check's back
        quiet(rig, "b", "update patients set name = 'drifted' where id = 3")
        quiet(rig, "b", "delete from patients where id = 6")
        quiet(rig, "b", "insert into patients values (4, 8, 'p4', null)")  # a has it, clinic 8
        quiet(rig, "b", "insert into patients values (9999, 7, 'nowhere', null)")
        res = run_check(rig)
        assert res.verdict == "different"
        got = sorted((d.kind, d.key_a["id"]) for d in res.diffs)
        assert got == [("different", 3), ("missing_on_a", 4), ("missing_on_a", 9999),
                       ("missing_on_b", 6)]
        rig.start_bridge()
        rep = repair.repair(config, "patients")
        assert rep.signalled == 4
        wait_until(lambda: sink_holds_the_matching_rows(rig), 30, "the repair to land")
        assert run_check(rig).verdict == "equal"
    finally:
        rig.close()


def test_a_transform_is_applied_and_checked_equal(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA,
                   [link("patients", "patients", ["id"], "a_to_b",
                         transform={"email": "lower(email)"})])
    try:
        rig.start_bridge()
        rig.execute("a", "insert into patients select g, 7, 'Name ' || g, "
                         "'Person' || g || '@Example.ORG' from generate_series(1, 120) g")
        wait_until(lambda: texts(rig, "a", "true") and texts(rig, "b") == [
            (i, c, n, e.lower()) for i, c, n, e in texts(rig, "a")], 30, "lower-cased emails")
        assert texts(rig, "b")[0] == ("1", "7", "Name 1", "person1@example.org")
        assert run_check(rig).verdict == "equal"  # compared with lower(email), not email
        rig.stop_bridge()
        quiet(rig, "b", "update patients set email = 'Person5@Example.ORG' where id = 5")
        res = run_check(rig)
        assert res.verdict == "different"
        assert [(d.key_a["id"], d.columns) for d in res.diffs] == [(5, ["email"])]
    finally:
        rig.close()


def _refused(new_db, tmp_path, extra: dict, schema_b: str = SCHEMA,
             direction: str = "a_to_b") -> str:
    rig = Rig(tmp_path, new_db("a"), new_db("b"),
              [link("patients", "patients", ["id"], direction, **extra)])
    rig.execute("a", SCHEMA)
    rig.execute("b", schema_b)
    with pytest.raises(ConfigError) as e:
        shapes(rig.config)
    return str(e.value)


def test_a_bad_where_is_refused_with_the_servers_message(new_db, tmp_path):
    msg = _refused(new_db, tmp_path, {"where": "clnic_id = 7"})
    assert msg == ("link 'patients': where for side a (public.patients on peer 'a') is not "
                   'valid: column "clnic_id" does not exist')
    msg = _refused(new_db, tmp_path, {"where": "clinic_id + 1"})
    assert "argument of WHERE must be type boolean" in msg


def test_a_transform_of_a_key_or_of_the_wrong_type_is_refused(new_db, tmp_path):
    msg = _refused(new_db, tmp_path, {"transform": {"id": "id + 1"}})
    assert msg.startswith("link 'patients': transform of column 'id': 'id' is a key column")
    msg = _refused(new_db, tmp_path, {"transform": {"emial": "lower(email)"}})
    assert "'emial' is not a linked column of public.patients" in msg
    msg = _refused(new_db, tmp_path, {"transform": {"email": "lower(emal)"}})
    assert msg.endswith('is not valid: column "emal" does not exist')
    msg = _refused(new_db, tmp_path, {"transform": {"email": "length(email)"}})
    assert msg == ("link 'patients': transform of column 'email' gives integer, which does not "
                   "fit column 'email' (text) on peer 'b': integer values cannot be stored as "
                   "text with the same text; cast the expression to text")


def test_a_transform_cast_to_the_columns_type_is_accepted(new_db, tmp_path):
    narrow = SCHEMA.replace("email     text", "email     varchar(40)")
    rig = Rig(tmp_path, new_db("a"), new_db("b"), [link(
        "patients", "patients", ["id"], "a_to_b", transform={"email": "lower(email)"})])
    rig.execute("a", narrow)
    rig.execute("b", narrow)
    with pytest.raises(ConfigError, match=r"gives text, which does not fit column 'email' "
                                          r"\(character varying\(40\)\)"):
        shapes(rig.config)
    rig = Rig(tmp_path, rig.dsn["a"], rig.dsn["b"], [link(
        "patients", "patients", ["id"], "a_to_b",
        transform={"email": "lower(email)::varchar(40)"})])
    assert shapes(rig.config)["patients"].link.transform == {
        "email": "lower(email)::varchar(40)"}


def test_filters_and_transforms_the_config_refuses(tmp_path):
    def load(direction: str, **extra: object) -> None:
        rig = Rig(tmp_path, "x", "y", [link("patients", "patients", ["id"], direction, **extra)])
        load_config(rig.config_path)

    with pytest.raises(ConfigError, match="transform is not supported on two-way links"):
        load("both", transform={"email": "lower(email)"})
    with pytest.raises(ConfigError, match=r'needs where = \{ a = "...", b = "..." \}'):
        load("both", where=CLINIC)
    with pytest.raises(ConfigError, match="where.b is missing"):
        load("both", where={"a": CLINIC})
    with pytest.raises(ConfigError, match="side b is the sink of this a_to_b link"):
        load("a_to_b", where={"b": CLINIC})
    with pytest.raises(ConfigError, match=r"where: unknown key 'c' \(expected one of: a, b\)"):
        load("both", where={"a": CLINIC, "c": CLINIC})


def test_a_two_way_filter_moves_a_row_out_as_a_delete_on_the_other_side(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("patients", "patients", ["id"], "both",
                                                   where={"a": CLINIC, "b": CLINIC})])
    try:
        rig.start_bridge()
        rig.execute("a", "insert into patients values (1, 7, 'a1', null), (2, 8, 'a2', null)")
        rig.execute("b", "insert into patients values (11, 7, 'b11', null), "
                         "(12, 8, 'b12', null)")
        both = [("1", "7", "a1", None), ("11", "7", "b11", None)]
        wait_until(lambda: texts(rig, "a", CLINIC) == texts(rig, "b", CLINIC) == both, 30,
                   "the clinic-7 rows on both sides")
        assert [r[0] for r in texts(rig, "a")] == ["1", "2", "11"]  # 12 stays on b
        rig.execute("b", "update patients set clinic_id = 8 where id = 1")  # moved out on b
        wait_until(lambda: [r[0] for r in texts(rig, "a")] == ["2", "11"], 30,
                   "row 1 deleted on a")
        assert texts(rig, "b", "id = 1") == [("1", "8", "a1", None)]  # kept, local to b
        rig.wait_drained()
        assert run_check(rig).verdict == "equal"  # both sides compared through their filter
    finally:
        rig.close()
