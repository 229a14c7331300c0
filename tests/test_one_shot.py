"""A small one-way batch into a Postgres sink as one statement (sync.apply_batch, migration
0014): the same rows, record and refusals as the sink transaction it replaces.

Each test runs a real bridge between two databases in different print settings and
compares tables by the text of every column. A sink trigger notes which statement wrote
each batch (current_query() is the bridge's own statement), so a test knows the path it
exercised. The bridge runs with ITEMS (nothing staged), so the path is the one under
test however the suite sets SYNCBRIDGE_STAGE_FROM."""

from __future__ import annotations

import psycopg

from rigs import ITEMS, link, make_rig, unsettle
from syncbridge.bridge.bench.rig import wait_until

SETTINGS = {
    "a": {"timezone": "Pacific/Chatham", "datestyle": "SQL, DMY", "intervalstyle": "sql_standard",
          "extra_float_digits": "-2"},
    "b": {"timezone": "America/St_Johns", "datestyle": "German", "intervalstyle": "iso_8601"},
}
SCHEMA = ("create table os (id int primary key, v text, n numeric, t timestamptz, "
          "i interval, j jsonb)")
# on the sink: which statement wrote each batch, and an audit row per written row written
# by a trigger function that names its table unqualified (the caller's search_path)
PATHS = """
create table paths (at serial, stmt text);
create table audit (id int, op text);
create function note_path() returns trigger language plpgsql as $$
begin
    insert into paths (stmt) values (case
        when current_query() like '%sync.apply_batch%' then 'one_shot'
        else 'transaction' end);
    return null;
end $$;
create function audit_row() returns trigger language plpgsql as $$
begin
    insert into audit values (coalesce(new.id, old.id), tg_op);
    return null;
end $$;
create trigger note_path after insert or update or delete on os for each statement
    execute function note_path();
create trigger audit_row after insert or update or delete on os for each row
    execute function audit_row();
"""
UNAVAILABLE = "event=one_shot_unavailable"


def _rig(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("os", "os", ["id"], "a_to_b")],
                   schema_b=SCHEMA + ";" + PATHS)
    unsettle(rig, SETTINGS)
    return rig


def _paths(rig) -> set[str]:
    return {r[0] for r in rig.query("b", "select stmt from paths")}


def _settled(rig, what: str) -> None:
    """Once the queue is empty every batch is applied at the sink (its source commit comes
    after the sink's): the tables must be equal then."""
    rig.wait_drained()
    a, b = rig.texts("a", "os", ["id"]), rig.texts("b", "os", ["id"])
    assert a == b, f"{what}: {sorted(set(a) ^ set(b))[:6]}\n{rig.log_text()[-2000:]}"


def test_a_small_batch_is_one_sink_statement_with_the_same_rows_and_record(new_db, tmp_path):
    rig = _rig(new_db, tmp_path)
    rig.start_bridge(ITEMS)
    try:
        with psycopg.connect(rig.dsn["a"]) as c:
            c.execute("insert into os select g, E'x\\ty' || g, g / 3.0, "
                      "'2026-03-29 02:30+13:45', '1 mon 2 days 03:04:05', "
                      "'{\"k\": null, \"n\": 1.50}' from generate_series(1, 5) g")
        _settled(rig, "inserts")
        with psycopg.connect(rig.dsn["a"]) as c:
            c.execute("update os set n = n * 1.000, j = 'null' where id = 2")
            c.execute("delete from os where id = 3")
        _settled(rig, "an update and a delete in one batch")
        assert _paths(rig) == {"one_shot"}, _paths(rig)
        # each trigger fired once per row written: nothing was applied twice
        assert rig.query("b", "select op, count(*) from audit group by op order by op") == [
            ("DELETE", 1), ("INSERT", 5), ("UPDATE", 1)]
        records = rig.query("b", "select signals, upserts, deletes, queue_ids is not null "
                                 "from sync.applied_batches order by applied_at")
        assert records == [(5, 5, 0, True), (2, 1, 1, True)], records
    finally:
        rig.close()


def test_a_row_the_sink_rejects_is_isolated_after_the_statement_failed(new_db, tmp_path):
    rig = _rig(new_db, tmp_path)
    rig.execute("b", "alter table os add constraint no_seven check (id <> 7)")
    rig.start_bridge(ITEMS)
    try:
        rig.execute("a", "insert into os (id, v) select g, 'v' from generate_series(5, 9) g")
        wait_until(lambda: rig.query(rig.config.hub, "select count(*) from sync.dead_letter "
                                                     "where status = 'open'") == [(1,)], 60,
                   "the rejected row's dead letter")
        rig.wait_drained()
        assert [r[0] for r in rig.query("b", "select id from os order by id")] == [5, 6, 8, 9]
        # the failed statement left nothing behind: each row was written once
        assert rig.query("b", "select count(*) from audit") == [(4,)]
    finally:
        rig.close()


def test_a_sink_migrated_before_the_function_still_gets_every_row(new_db, tmp_path):
    rig = _rig(new_db, tmp_path)
    rig.execute("b", "drop function sync.apply_batch(text, regclass, jsonb, text, jsonb, text, "
                     "jsonb, uuid, text, char, int, text)")
    rig.start_bridge(ITEMS)
    try:
        for g in range(3):
            rig.execute("a", f"insert into os (id, v) values ({g}, 'v{g}')")
            _settled(rig, f"batch {g}")
        assert _paths(rig) == {"transaction"}
        assert rig.log_text().count(UNAVAILABLE) == 1
    finally:
        rig.close()


def test_a_sink_rule_the_statement_cannot_run_with_turns_it_off_and_loses_nothing(new_db,
                                                                                 tmp_path):
    """A DO ALSO rule on the sink table's deletes: the function's delete cannot run in
    WITH (0A000), so the batch takes the sink transaction, and the next ones too."""
    rig = _rig(new_db, tmp_path)
    rig.execute("b", "create rule os_gone as on delete to os do also "
                     "insert into audit values (old.id, 'rule')")
    rig.start_bridge(ITEMS)
    try:
        rig.execute("a", "insert into os (id, v) select g, 'v' from generate_series(1, 4) g")
        _settled(rig, "inserts")
        rig.execute("a", "delete from os where id = 2")
        _settled(rig, "a delete")
        rig.execute("a", "delete from os where id = 3")
        _settled(rig, "another delete")
        assert rig.log_text().count(UNAVAILABLE) == 1
        assert rig.query("b", "select id from audit where op = 'rule' order by id") == [
            (2,), (3,)]
    finally:
        rig.close()


def test_a_column_added_at_the_sink_pauses_the_link_and_writes_nothing(new_db, tmp_path):
    rig = _rig(new_db, tmp_path)
    rig.start_bridge(ITEMS)
    try:
        rig.execute("a", "insert into os (id, v) values (1, 'before')")
        _settled(rig, "before the change")
        rig.execute("b", "alter table os add column extra text")
        rig.execute("a", "insert into os (id, v) values (2, 'after')")
        def paused() -> str | None:
            rows = rig.query("a", "select paused_reason from sync.link_control "
                                  "where link = 'os'")
            return rows[0][0] if rows else None
        wait_until(lambda: paused() is not None, 30, "the link to pause")
        reason = paused()
        assert "column extra added" in reason, reason
        assert rig.query("b", "select id from os") == [(1,)]
        assert rig.query("a", "select count(*) from sync.queue where link = 'os'") == [(1,)]
    finally:
        rig.close()


def test_the_functions_statements_are_prepared_once_per_session_and_count_right(new_db,
                                                                                tmp_path):
    """sync.apply_batch runs the link's upsert and delete as prepared statements of the
    session (migration 0015): prepared at the first batch, their plan kept after, and the
    counts they return are the rows written (an unchanged row is skipped, not counted)."""
    import json
    import re
    import uuid

    from syncbridge.engine import sqlfiles
    from syncbridge.engine.postgres import capture
    from syncbridge.engine.postgres import sql as pg_sql
    from syncbridge.engine.postgres.sink import expected_shape
    from syncbridge.engine.validate import shapes

    rig = _rig(new_db, tmp_path)
    shape = shapes(rig.config)["os"]
    stmts = pg_sql.render(shape, "a", "b")
    call = re.sub(r"\$\d+", "%s", sqlfiles.query("postgres/queue.sql", "apply_batch"))
    sink_shape = json.dumps(expected_shape(shape.table("b")))

    def batch(c: psycopg.Connection, n: int, rows: list | None, keys: list | None) -> tuple:
        return c.execute(call, (
            capture.origin_tag(shape.link, "a"), '"public"."os"', sink_shape, stmts.delete,
            json.dumps(keys) if keys else None, stmts.upsert,
            json.dumps(rows) if rows else None, uuid.uuid4(), "os", "a", 1,
            f"{{[{n},{n + 1})}}", True)).fetchone()

    def row(i: int, v: str) -> dict:
        return {"id": str(i), "v": v, "n": None, "t": None, "i": None, "j": None}

    try:
        with psycopg.connect(rig.dsn["b"], autocommit=True) as c:
            assert batch(c, 1, [row(1, "a"), row(2, "b")], None) == (True, 0, 2)
            for n in range(2, 9):  # the same row again: the upsert's guard skips it
                assert batch(c, n, [row(1, "a")], None) == (True, 0, 0)
            assert batch(c, 9, [row(1, "changed")], [{"id": 2}]) == (True, 1, 1)
            prepared = c.execute(
                "select statement, generic_plans + custom_plans, generic_plans "
                "from pg_prepared_statements where name like 'syncbridge%' "
                "order by 2 desc").fetchall()
        assert [(s.count("jsonb_to_recordset"), runs) for s, runs, _ in prepared] == [
            (1, 9), (1, 1)], prepared  # the upsert, nine batches; the delete, one
        assert prepared[0][2] > 0, "the upsert was planned again at every batch"
        assert rig.texts("b", "os", ["id"]) == [("1", "changed", None, None, None, None)]
    finally:
        rig.close()
