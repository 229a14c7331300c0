"""The README's least-privilege grants are enough for a real bridge."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from rigs import Rig, link

ROLE = "syncbridge"


def _readme_grants(database: str) -> list[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("### Privileges", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    text = re.sub(r"--[^\n]*", "", block).replace("password '…'", "")
    text = text.replace("database portal", f'database "{database}"')
    return [s.strip() for s in text.replace("public.patients, public.appointments",
                                            "public.t").split(";") if s.strip()]


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


def test_bridge_runs_with_only_the_readme_grants(new_db, tmp_path, role):
    schema = "create table t (id int primary key, v text);"
    dsn = {"a": new_db("a"), "b": new_db("b")}
    owner = Rig(tmp_path / "owner", dsn["a"], dsn["b"], [link("t", "t", ["id"], "both")])
    for side in ("a", "b"):
        owner.execute(side, schema)
    owner.setup()
    for side in ("a", "b"):
        grants = _readme_grants(urlsplit(dsn[side]).path.lstrip("/"))
        assert grants[0].startswith("create role")  # once per server, not per database
        for stmt in grants if side == "a" else grants[1:]:
            owner.execute(side, stmt)

    def as_role(d: str) -> str:
        p = urlsplit(d)
        return urlunsplit(p._replace(netloc=f"{role}@{p.hostname}:{p.port}"))

    bridge = Rig(tmp_path / "bridge", as_role(dsn["a"]), as_role(dsn["b"]),
                 [link("t", "t", ["id"], "both")])
    try:
        bridge.start_bridge()
        owner.execute("a", "insert into t values (1, 'from a')")
        owner.execute("b", "insert into t values (2, 'from b')")
        owner.wait_equal({"t": ["id"]}, 30)
        owner.execute("a", "truncate t")
        owner.wait_equal({"t": ["id"]}, 30)
        assert "permission denied" not in bridge.log_text(), bridge.log_text()
    finally:
        bridge.close()
