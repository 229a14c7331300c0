"""Two-way links that never undo an edit (issue 12): base images for rows that predate
install, schema changes that pause a link until `adopt`, column-wise merge,
resolver functions, key ranges and user triggers. Real PostgreSQL, real bridges."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import psycopg
import pytest

from rigs import Rig, link, make_rig
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.config import ConfigError
from syncbridge.engine.install import install
from syncbridge.engine.postgres import adopt as adopt_mod

SCHEMA = "create table people (id int primary key, name text, phone text, changed timestamptz);"
T_OLD, T_NEW = "2026-01-01 10:00+00", "2026-01-01 11:00+00"


def _conflicts(rig) -> list[tuple]:
    return rig.query("a", "select key->>'id', winner, columns, status from sync.conflicts "
                          "order by (key->>'id')::int")


def _names(rig, side: str) -> dict[int, tuple]:
    return {r[0]: r[1:3] for r in rig.rows(side, "people", ["id"])}


def _cli(rig: Rig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "--config",
                           str(rig.config_path), *args], capture_output=True, text=True,
                          timeout=120)


def _prefilled(new_db, tmp_path, differ: bool = False, **extra):
    """Two equal tables filled before install (and, with differ, keys 3 and 4 apart)."""
    rig = Rig(tmp_path, new_db("a", migrated=True), new_db("b", migrated=True),
              [link("people", "people", ["id"], **extra)])
    fill = f"insert into people select g, 'p' || g, '000', '{T_OLD}' from generate_series(1, 20) g"
    for side in ("a", "b"):
        rig.execute(side, SCHEMA)
        rig.execute(side, fill)
    if differ:
        rig.execute("b", "update people set name = 'b-edit' where id = 3")
        rig.execute("b", "delete from people where id = 4")
    from syncbridge.engine.migrate import migrate

    migrate(rig.config)
    return rig, list(install(rig.config))


def test_rows_that_predate_install_are_not_conflicts(new_db, tmp_path):
    rig, notes = _prefilled(new_db, tmp_path)
    try:
        assert "people: base recorded for 20 equal row(s)" in notes
        assert not any("backfill" in n for n in notes), notes  # nothing to send
        rig.start_bridge()
        rig.execute("b", "update people set phone = 'b-phone' where id <= 5")
        rig.execute("a", "update people set name = 'a-name' where id > 15")
        rig.execute("b", "delete from people where id = 10")
        rig.wait_equal({"people": ["id"]})
        rig.wait_drained()
        names = _names(rig, "a")
        assert [names[i][1] for i in range(1, 6)] == ["b-phone"] * 5  # b's edits kept
        assert names[16][0] == "a-name" and 10 not in names
        assert _conflicts(rig) == []
    finally:
        rig.close()


def test_rows_that_differ_at_install_are_reported_and_never_undone(new_db, tmp_path):
    rig, notes = _prefilled(new_db, tmp_path, differ=True)
    try:
        [report] = [n for n in notes if "base recorded" in n]
        assert report.startswith("people: base recorded for 18 equal row(s); 2 key(s) differ")
        assert '{"id": 3}' in report and '{"id": 4}' in report
        rig.start_bridge()
        rig.execute("b", "update people set phone = 'b-phone' where id = 3")  # the differing row
        rig.execute("a", "update people set phone = 'a-phone' where id = 4")  # absent on b
        wait_until(lambda: _names(rig, "a").get(3) == ("b-edit", "b-phone"), 30,
                   "b's edit of a differing row to reach a")
        wait_until(lambda: _names(rig, "b").get(4) == ("p4", "a-phone"), 30,
                   "a's edit of a row b lacked to reach b")
        rig.wait_equal({"people": ["id"]})
        # b's edit replaced a's differing row: recorded, settled, nothing parked
        assert _conflicts(rig) == [("3", "b", [], "resolved")]
        assert rig.query("a", "select policy from sync.conflicts") == [("no_base",)]
    finally:
        rig.close()


def test_a_numeric_key_of_many_digits_gets_its_base(new_db, tmp_path):
    rig = Rig(tmp_path, new_db("a", migrated=True), new_db("b", migrated=True),
              [link("tk", "tk", ["id"])])
    for side in ("a", "b"):
        rig.execute(side, "create table tk (id numeric primary key, v text)")
        rig.execute(side, "insert into tk values (0.12345678901234567890123, 'x'), (2, 'y')")
    from syncbridge.engine.migrate import migrate

    migrate(rig.config)
    try:
        assert "tk: base recorded for 2 equal row(s)" in list(install(rig.config))
        rig.start_bridge()
        rig.execute("b", "update tk set v = 'b-edit' where id < 1")
        wait_until(lambda: rig.query("a", "select v from tk where id < 1") == [("b-edit",)], 30,
                   "b's edit")
        rig.wait_drained()
        assert rig.query("b", "select v from tk where id < 1") == [("b-edit",)]
        assert _conflicts(rig) == []
    finally:
        rig.close()


def test_settling_a_parked_merge_keeps_the_other_sides_other_columns(new_db, tmp_path):
    rig = _merge_rig(new_db, tmp_path, conflict="merge", merge_fallback="manual")
    try:
        rig.execute("a", "update people set name = 'A-name', phone = 'A-phone' where id = 1")
        rig.execute("b", "update people set name = 'B-name' where id = 1")
        rig.start_bridge()
        wait_until(lambda: _conflicts(rig) == [("1", None, ["name"], "open")], 30, "the park")
        [(cid,)] = rig.query("a", "select id from sync.conflicts")
        rig.execute("a", "select sync.resolve_conflict(%s, 'b')", (cid,))
        wait_until(lambda: _names(rig, "a")[1] == ("B-name", "A-phone")
                   and _names(rig, "b")[1] == ("B-name", "A-phone"), 30,
                   "b's name and a's phone on both sides")
    finally:
        rig.close()


def _merge_rig(new_db, tmp_path, **extra):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("people", "people", ["id"], **extra)])
    rig.execute("a", f"insert into people select g, 'p' || g, '000', '{T_OLD}' "
                     "from generate_series(1, 4) g")
    rig.start_bridge()
    rig.wait_equal({"people": ["id"]})
    rig.wait_drained()
    assert rig.stop_bridge() == 0
    return rig


def test_merge_keeps_both_sides_edits_to_different_columns(new_db, tmp_path):
    rig = _merge_rig(new_db, tmp_path, conflict="merge", merge_fallback="b_wins")
    try:
        rig.execute("a", "update people set name = 'portal name' where id = 1")
        rig.execute("b", "update people set phone = 'clinic phone' where id = 1")
        rig.execute("a", "update people set name = 'a2', phone = 'a2' where id = 2")
        rig.execute("b", "update people set phone = 'b2' where id = 2")
        rig.execute("a", "update people set phone = 'same' where id = 3")
        rig.execute("b", "update people set phone = 'same' where id = 3")
        rig.start_bridge()
        wait_until(lambda: _names(rig, "a").get(1) == ("portal name", "clinic phone")
                   and rig.equal("people", ["id"]), 30, "the merged row on both sides")
        rig.wait_drained()
        names = _names(rig, "b")
        assert names[1] == ("portal name", "clinic phone")
        assert names[2] == ("a2", "b2")  # name only a changed; phone both: b_wins
        assert names[3] == ("p3", "same")
        assert _conflicts(rig) == [("1", "merge", [], "resolved"),
                                   ("2", "merge", ["phone"], "resolved")]
    finally:
        rig.close()


def test_merge_with_manual_fallback_parks_only_collisions(new_db, tmp_path):
    rig = _merge_rig(new_db, tmp_path, conflict="merge", merge_fallback="manual")
    try:
        rig.execute("a", "update people set phone = 'a1' where id = 1")
        rig.execute("b", "update people set phone = 'b1' where id = 1")
        rig.execute("a", "update people set name = 'a2' where id = 2")
        rig.execute("b", "update people set phone = 'b2' where id = 2")
        rig.start_bridge()
        wait_until(lambda: _names(rig, "a").get(2) == ("a2", "b2")
                   and _names(rig, "b").get(2) == ("a2", "b2"), 30, "the merge of key 2")
        rig.wait_drained()
        assert _conflicts(rig) == [("1", None, ["phone"], "open"), ("2", "merge", [], "resolved")]
        assert _names(rig, "a")[1][1] == "a1" and _names(rig, "b")[1][1] == "b1"
    finally:
        rig.close()


RESOLVER = """
create function public.pick(link text, key jsonb, a jsonb, b jsonb, base jsonb)
returns jsonb language plpgsql as $$
begin
    if (key->>'id')::int = 1 then  -- a row of its own making
        return a || jsonb_build_object('phone', (a->>'phone') || '+' || (b->>'phone'));
    elsif (key->>'id')::int = 2 then
        return null;  -- delete on both sides
    end if;
    raise exception 'cannot settle key %', key->>'id';
end $$;
"""


def test_a_resolver_function_settles_conflicts(new_db, tmp_path):
    rig = _merge_rig(new_db, tmp_path, conflict="function:public.pick")
    try:
        rig.execute("a", RESOLVER)
        for i in (1, 2, 3):
            rig.execute("a", f"update people set phone = 'a{i}' where id = {i}")
            rig.execute("b", f"update people set phone = 'b{i}' where id = {i}")
        rig.start_bridge()
        wait_until(lambda: _names(rig, "b").get(1) == ("p1", "a1+b1")
                   and _names(rig, "a").get(1) == ("p1", "a1+b1"), 30, "the resolver's row")
        wait_until(lambda: 2 not in _names(rig, "a") and 2 not in _names(rig, "b"), 30,
                   "the resolver's delete")
        wait_until(lambda: rig.query("a", "select count(*) from sync.dead_letter")[0][0] >= 1,
                   30, "the resolver's error as a dead letter")
        dead = rig.query("a", "select key->>'id', error from sync.dead_letter")
        assert {k for k, _ in dead} == {"3"}  # from whichever directions carried key 3
        assert all("cannot settle key 3" in e for _, e in dead)
        assert _names(rig, "a")[4] == ("p4", "000")  # the link did not stall
        rig.execute("a", "update people set name = 'still flowing' where id = 4")
        wait_until(lambda: _names(rig, "b")[4][0] == "still flowing", 30, "later edits")
    finally:
        rig.close()


def _paused(rig) -> str | None:
    rows = rig.query("a", "select paused_reason from sync.link_control where link = 'people'")
    return rows[0][0] if rows else None


def test_a_column_added_while_running_pauses_the_link_until_adopt(new_db, tmp_path):
    other = "create table notes (id int primary key, body text);"
    rig = make_rig(new_db, tmp_path, SCHEMA + other,
                   [link("people", "people", ["id"]), link("notes", "notes", ["id"])])
    rig.execute("a", f"insert into people select g, 'p' || g, '000', '{T_OLD}' "
                     "from generate_series(1, 200) g")
    rig.start_bridge()
    rig.wait_equal({"people": ["id"]})
    stop = threading.Event()
    written = {"a": 0, "b": 0}

    def writer(side: str, ids: range) -> None:
        with psycopg.connect(rig.dsn[side], autocommit=True) as c:
            while not stop.is_set():
                n = written[side]
                c.execute("update people set name = %s where id = %s",
                          (f"{side}{n}", ids[n % len(ids)]))
                written[side] = n + 1

    threads = [threading.Thread(target=writer, args=("a", range(1, 100))),
               threading.Thread(target=writer, args=("b", range(100, 201)))]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: min(written.values()) > 20, 30, "writers on both sides")
        for side in ("a", "b"):
            rig.execute(side, "alter table people add column email text")
        wait_until(lambda: _paused(rig) is not None, 30, "the link to pause")
        assert _paused(rig).startswith("schema changed on peer ")
        assert "column email added" in _paused(rig)
        rig.execute("a", "insert into notes values (1, 'other links keep flowing')")
        wait_until(lambda: rig.equal("notes", ["id"]) and rig.rows("b", "notes", ["id"]), 30,
                   "the other link")
        stop.set()
        for t in threads:
            t.join(30)
        queued = rig.query("a", "select count(*) from sync.queue where link = 'people'")[0][0]
        queued += rig.query("b", "select count(*) from sync.queue where link = 'people'")[0][0]
        assert queued > 0  # signals kept queueing while paused
        rig.execute("a", "update people set email = 'a@example.org' where id = 1")
        out = _cli(rig, "adopt", "people")
        assert out.returncode == 0, out.stderr
        assert "people: adopted (schema changed on peer" in out.stdout
        rig.wait_equal({"people": ["id"]}, timeout=60)
        assert _paused(rig) is None
        assert rig.query("b", "select email from people where id = 1") == [("a@example.org",)]
        assert _conflicts(rig) == []  # a column added on both sides changes no row
        rig.execute("b", "update people set email = 'b@example.org' where id = 150")
        wait_until(lambda: rig.query("a", "select email from people where id = 150")
                   == [("b@example.org",)], 30, "edits of the new column from b")
        assert _conflicts(rig) == []
    finally:
        stop.set()
        rig.close()


def test_adopt_refuses_a_column_dropped_on_one_side_and_reports_unlinked(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("people", "people", ["id"])])
    try:
        rig.execute("b", "alter table people drop column phone")
        with pytest.raises(ConfigError, match="column 'phone' does not exist"):
            list(adopt_mod.adopt(rig.config, ["people"]))
        rig.execute("b", "alter table people add column phone text, add column extra int")
        lines = list(adopt_mod.adopt(rig.config, ["people"]))
        assert ("people: column extra of public.people on b is not linked; map it in the "
                "link's `columns` (or add it on the other side) to sync it") in lines
    finally:
        rig.close()


def test_merge_after_a_kill_between_sink_commit_and_cleanup(new_db, tmp_path):
    rig = _merge_rig(new_db, tmp_path, conflict="merge")
    try:
        rig.execute("a", "update people set name = 'an' where id = 1")
        rig.execute("b", "update people set phone = 'bp' where id = 1")
        proc = rig.start_bridge({"SYNCBRIDGE_FAULT": "after_sink_commit"})
        proc.wait(60)  # the fault point kills the bridge right after the sink commit
        rig.proc = None
        rig.start_bridge()
        wait_until(lambda: _names(rig, "a").get(1) == ("an", "bp")
                   and rig.equal("people", ["id"]), 30, "the merged row after the crash")
        rig.wait_drained()
        assert _conflicts(rig) == [("1", "merge", [], "resolved")]  # recorded once
    finally:
        rig.close()


def test_overlapping_key_sequences_are_warned_about_and_fixed(new_db, tmp_path):
    schema = "create table t (id int generated by default as identity primary key, v text);"
    rig = make_rig(new_db, tmp_path, schema, [link("t", "t", ["id"])])
    try:
        [warning] = [n for n in install(rig.config) if n.startswith("warning: t:")]
        assert "key column id on a and id on b are both filled from sequences" in warning
        assert "--fix-sequences" in warning
        rig.execute("a", "insert into t (v) values ('x'), ('y')")
        fixed = list(install(rig.config, fix_sequences=True))
        assert "t: sequence of id on a now hands out odd values from 3 (increment 2)" in fixed
        assert "t: sequence of id on b now hands out even values from 4 (increment 2)" in fixed
        assert not [n for n in install(rig.config) if n.startswith("warning: t:")]
        rig.execute("a", "insert into t (v) values ('a')")
        rig.execute("b", "insert into t (v) values ('b')")
        assert rig.query("a", "select max(id) from t") == [(3,)]
        assert rig.query("b", "select max(id) from t") == [(4,)]
    finally:
        rig.close()


def test_user_triggers_on_a_sink_table_are_warned_about(new_db, tmp_path):
    touch = ("create function touch() returns trigger language plpgsql as "
             "$$ begin new.changed := now(); return new; end $$; "
             "create trigger touch_changed before update on people "
             "for each row execute function touch();")
    rig = make_rig(new_db, tmp_path, SCHEMA + touch, [link("people", "people", ["id"])])
    try:
        warnings = [n for n in install(rig.config) if "touch_changed" in n]
        assert len(warnings) == 2  # both sides are sinks of a two-way link
        assert "current_setting('syncbridge.origin', true)" in warnings[0]
    finally:
        rig.close()


def test_sigkill_is_harmless_to_seeding(new_db, tmp_path):
    """install's base survives a bridge killed mid-stream: no edit is undone after it."""
    rig, _notes = _prefilled(new_db, tmp_path)
    try:
        rig.start_bridge()
        rig.execute("b", "update people set phone = 'x' where id <= 10")
        rig.stop_bridge(signal.SIGKILL)
        rig.start_bridge()
        rig.execute("b", "update people set phone = 'y' where id > 10")
        rig.wait_equal({"people": ["id"]})
        rig.wait_drained()
        phones = {k: v[1] for k, v in _names(rig, "a").items()}
        assert set(phones.values()) == {"x", "y"} and _conflicts(rig) == []
    finally:
        rig.close()


@pytest.mark.parametrize(("ddl", "reason"), [
    ("alter table people drop column phone", "column phone dropped"),
    ("alter table people rename column phone to mobile", "column mobile added, column phone "
                                                         "dropped"),
    ("alter table people alter column changed type timestamp", "column changed type "
     "timestamp with time zone -> timestamp without time zone"),
])
def test_every_kind_of_schema_change_pauses_with_its_reason(new_db, tmp_path, ddl, reason):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("people", "people", ["id"])])
    try:
        rig.execute("a", "insert into people values (1, 'n', 'p', now())")
        rig.start_bridge()
        rig.wait_equal({"people": ["id"]})
        for side in ("a", "b"):
            rig.execute(side, ddl)
        rig.execute("b", "update people set name = 'after the change' where id = 1")
        wait_until(lambda: _paused(rig) is not None, 30, "the link to pause")
        assert _paused(rig) == f"schema changed on peer b: {reason}"  # b's edit found it
        states = {r[0] for r in rig.query("a", "select state from sync.status "
                                               "where link = 'people'")}
        assert states == {f"paused: schema changed on peer b: {reason}"}
        assert rig.query("a", "select name from people") == [("n",)]  # nothing applied
        out = _cli(rig, "adopt", "people")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: rig.query("a", "select name from people") == [("after the change",)],
                   30, "the edit made meanwhile")
        assert _paused(rig) is None and _conflicts(rig) == []
    finally:
        rig.close()


def test_no_edit_is_undone_after_uninstall_install_or_a_repair(new_db, tmp_path):
    import asyncio

    from syncbridge.engine.install import uninstall
    from syncbridge.engine.reconcile import check, repair
    from syncbridge.engine.validate import shapes

    rig, _notes = _prefilled(new_db, tmp_path)
    try:
        list(uninstall(rig.config))
        rig.execute("b", "update people set name = 'while uninstalled' where id = 1")
        notes = list(install(rig.config))
        assert any("19 equal row(s); 1 key(s) differ" in n for n in notes), notes
        # drift written around capture, then found and repaired from a
        with psycopg.connect(rig.dsn["b"], autocommit=True) as c, c.transaction():
            c.execute("select set_config('syncbridge.origin', 'people:a', true)")
            c.execute("update people set phone = 'drift' where id = 3")
        config = rig.config
        [res] = asyncio.run(check.check_all(config, shapes(config), [], settle=2.0))
        assert {d.key_a["id"] for d in res.diffs} == {1, 3}
        repair.repair(config, "people", prefer="a")
        rig.start_bridge()
        wait_until(lambda: _names(rig, "b")[3] == ("p3", "000"), 30, "the repair of key 3")
        wait_until(lambda: _names(rig, "b")[1] == ("p1", "000"), 30, "the repair of key 1")
        rig.execute("b", "update people set phone = 'b after repair' where id = 3")
        rig.execute("a", "update people set name = 'a after reinstall' where id = 2")
        rig.execute("b", "update people set name = 'b on key 1' where id = 1")
        rig.wait_equal({"people": ["id"]})
        rig.wait_drained()
        names = _names(rig, "a")
        assert names[3] == ("p3", "b after repair") and names[1][0] == "b on key 1"
        assert _names(rig, "b")[2][0] == "a after reinstall"
        assert _conflicts(rig) == []
    finally:
        rig.close()


def test_a_key_named_differently_on_each_side_flows_both_ways(new_db, tmp_path):
    """The drain builds the key once when both sides name it alike; renamed, it builds
    the side-a spelling (the row_state key) apart: both ways, the bases agree."""
    rig = Rig(tmp_path, new_db("a", migrated=True), new_db("b", migrated=True),
              [link("people", "people", ["id"], columns={"id": "person_id", "name": "name"})])
    rig.execute("a", "create table people (id int primary key, name text)")
    rig.execute("b", "create table people (person_id int primary key, name text)")
    rig.setup()
    try:
        rig.start_bridge()
        rig.execute("a", "insert into people values (1, 'from a')")
        rig.execute("b", "insert into people values (2, 'from b')")
        wait_until(lambda: rig.query("a", "select count(*) from people")[0][0] == 2
                   and rig.query("b", "select count(*) from people")[0][0] == 2, 30, "both rows")
        rig.execute("b", "update people set name = 'b edit' where person_id = 1")
        rig.execute("a", "update people set name = 'a edit' where id = 2")
        want = [(1, "b edit"), (2, "a edit")]
        wait_until(lambda: rig.query("a", "select id, name from people order by 1") == want
                   and rig.query("b", "select person_id, name from people order by 1") == want,
                   30, "both edits on both sides")
        rig.wait_drained()
        for side in ("a", "b"):
            assert rig.query(side, "select key::text, image->>'name' from sync.row_state "
                                   "order by key::text") == [('{"id": 1}', "b edit"),
                                                            ('{"id": 2}', "a edit")]
        assert _conflicts(rig) == []
    finally:
        rig.close()
