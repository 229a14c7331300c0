"""The README's least-privilege grants are enough for a real bridge."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from rigs import STAGED, Rig, link
from syncbridge.engine import doctor

ROLE = "syncbridge"


def _readme_grants(database: str) -> list[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("### Privileges", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    text = re.sub(r"--[^\n]*", "", block).replace("password '…'", "")
    text = text.replace("database portal", f'database "{database}"')
    return [s.strip() for s in text.replace("public.patients, public.appointments",
                                            "public.t, public.u").split(";") if s.strip()]


@pytest.fixture
def role(pg_server):
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as c:
        if c.execute("select 1 from pg_roles where rolname = %s", (ROLE,)).fetchone():
            pytest.skip(f"a role named {ROLE} already exists on this server")
    yield ROLE
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as c:
        dbs = c.execute(r"select datname from pg_database "
                        r"where datname like 't\_%' and datallowconn").fetchall()
        for (db,) in dbs:
            with psycopg.connect(pg_server.dsn(db), autocommit=True) as d:
                d.execute(f"drop owned by {ROLE}")
        c.execute(f"drop role if exists {ROLE}")


LINKS = [link("t", "t", ["id"], "both"), link("u", "u", ["id"], "a_to_b")]


def _rigs(new_db, tmp_path, role: str, readme: bool,
          settings: dict | None = None) -> tuple[Rig, Rig]:
    """The owner's rig (migrated, installed) and the bridge's, as `role` with the
    README's grants (readme) or all of them but TEMPORARY, on databases whose PUBLIC
    may not create temporary tables (a hardened server)."""
    schema = "create table t (id int primary key, v text); create table u (id int primary key);"
    dsn = {"a": new_db("a"), "b": new_db("b")}
    owner = Rig(tmp_path / "owner", dsn["a"], dsn["b"], LINKS)
    for side in ("a", "b"):
        owner.execute(side, schema)
    owner.setup()
    for side in ("a", "b"):
        database = urlsplit(dsn[side]).path.lstrip("/")
        owner.execute(side, f'revoke temporary on database "{database}" from public')
        grants = _readme_grants(database)
        assert grants[0].startswith("create role")  # once per server, not per database
        assert any(g.startswith("grant temporary") for g in grants)
        for stmt in grants if side == "a" else grants[1:]:
            if readme or not stmt.startswith("grant temporary"):
                owner.execute(side, stmt)

    def as_role(d: str) -> str:
        p = urlsplit(d)
        return urlunsplit(p._replace(netloc=f"{role}@{p.hostname}:{p.port}"))

    return owner, Rig(tmp_path / "bridge", as_role(dsn["a"]), as_role(dsn["b"]), LINKS,
                      settings)


def test_bridge_runs_with_only_the_readme_grants(new_db, tmp_path, role):
    owner, bridge = _rigs(new_db, tmp_path, role, readme=True)
    try:
        bridge.start_bridge(STAGED)
        owner.execute("a", "insert into t values (1, 'from a')")
        owner.execute("b", "insert into t values (2, 'from b')")
        owner.execute("a", "insert into u select generate_series(1, 500)")
        owner.wait_equal({"t": ["id"], "u": ["id"]}, 30)
        owner.execute("a", "truncate t")
        owner.wait_equal({"t": ["id"]}, 30)
        assert "permission denied" not in bridge.log_text(), bridge.log_text()
        assert "event=staging_unavailable" not in bridge.log_text()
        # `syncbridge doctor` as the bridge's role: ready, and asks for no TRIGGER privilege
        code, lines = doctor.report(bridge.config)
        assert code == 0 and "TRIGGER" not in "\n".join(lines), lines
    finally:
        bridge.close()


def test_without_temporary_rows_flow_as_items_and_the_log_says_why(new_db, tmp_path, role):
    owner, bridge = _rigs(new_db, tmp_path, role, readme=False)
    try:
        bridge.start_bridge(STAGED)
        owner.execute("a", "insert into u select generate_series(1, 500)")
        owner.wait_equal({"u": ["id"]}, 30)
        owner.execute("a", "delete from u where id > 250")
        owner.wait_equal({"u": ["id"]}, 30)
        log = bridge.log_text()
        assert log.count("event=staging_unavailable link=u:a->b") == 1, log
        assert "grant_temporary" in log
        assert owner.query("a", "select count(*) from sync.dead_letter") == [(0,)]
        # and `syncbridge doctor` names the grant, as a warning (the link works)
        _code, lines = doctor.report(bridge.config)
        i = next(i for i, line in enumerate(lines)
                 if line.startswith("b: warning:") and "may not create temporary tables" in line)
        assert "GRANT TEMPORARY ON DATABASE" in lines[i + 1]
    finally:
        bridge.close()


def test_a_sink_that_may_not_emit_wal_messages_gets_every_batch_flushed_all_the_same(
        new_db, tmp_path, role):
    """In a backlog a one-way batch's source commit waits for the sink's flush of it, by
    a statement (pg_logical_emit_message) any role may run unless the server revoked it.
    Revoked: the link waits for the server's own flush once, says so, and commits
    synchronously from then on; nothing is lost or kept back. (500 rows in batches of
    100: the first is taken with the next ahead of it.)"""
    owner, bridge = _rigs(new_db, tmp_path, role, readme=True, settings={"batch_size": 100})
    try:
        owner.execute("b", """do $$ declare f regprocedure; begin
            for f in select oid::regprocedure from pg_proc
                      where proname = 'pg_logical_emit_message' loop
                execute format('revoke execute on function %s from public', f);
            end loop; end $$""")
        bridge.start_bridge(STAGED)
        owner.execute("a", "insert into u select generate_series(1, 500)")
        owner.wait_equal({"u": ["id"]}, 30)
        owner.execute("a", "delete from u where id > 250")
        owner.wait_equal({"u": ["id"]}, 30)
        bridge.wait_drained(30)
        log = bridge.log_text()
        assert log.count("event=sink_flush_unavailable link=u:a->b sqlstate=42501") == 1, log
        assert "event=retry" not in log, log
        assert owner.query("a", "select count(*) from sync.dead_letter") == [(0,)]
    finally:
        bridge.close()


def test_doctor_says_when_capture_is_missing_and_who_may_install_it(new_db, tmp_path, role):
    """A capture trigger dropped on a source table: doctor, as the bridge's role (no
    TRIGGER privilege), warns that capture is missing and that the owner must install it;
    as the owner it only says to run install."""
    owner, bridge = _rigs(new_db, tmp_path, role, readme=True)
    try:
        owner.execute("a", "drop trigger syncbridge_u_a_ins on public.u")
        code, lines = doctor.report(bridge.config)
        text = "\n".join(lines)
        assert code == 0, text
        assert ('a: warning: capture is not installed on "public"."u", and '
                f"{role} may not install it (TRIGGER)") in text
        assert f'GRANT TRIGGER ON TABLE "public"."u" TO "{role}";' in text
        assert text.count("capture is not installed") == 1, text  # t's triggers are there
        code, lines = doctor.report(owner.config)
        assert 'a: warning: capture is not installed on "public"."u"' in lines, lines
    finally:
        bridge.close()
