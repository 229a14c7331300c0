"""Test helpers around bridge.rig: a two-database rig per test."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from syncbridge.bridge.bench import rig as bench_rig
from syncbridge.engine.migrate import migrate

# How long "eventually" may take here: a `syncbridge run` started by a test spends
# 5-8 s on its imports alone on two cores shared with other test runs, and the
# rig's 30 s defaults (sized for the demo and benches) left a loaded machine too
# little of that. Only a bug (never converging) exceeds it; passing runs never wait it.
EVENTUALLY = 90.0
# Bridge environments that pick how one-way batches travel (engine/postgres/staged.py):
# STAGED stages every batch, so a test of a few rows runs the COPY path that only
# large batches take otherwise; ITEMS never stages, so a large batch runs the item path.
STAGED = {"SYNCBRIDGE_STAGE_FROM": "1"}
ITEMS = {"SYNCBRIDGE_STAGE_FROM": str(10**9)}
TRANSPORTS = {"items": ITEMS, "staged": STAGED}  # parametrize ids -> the bridge's extra env


def unsettle(rig: bench_rig.Rig, settings: dict[str, dict[str, str]]) -> None:
    """Give each side's database its own print settings (side -> setting -> value), so
    a value that travels as text under the session's settings, not the bridge's pinned
    ones, shows up as a difference."""
    for side, values in settings.items():
        db = rig.dsn[side].rsplit("/", 1)[1]
        for k, v in values.items():
            rig.execute(side, f'alter database "{db}" set {k} = \'{v}\'')


class Rig(bench_rig.Rig):
    """bench.rig.Rig with the tests' patience for convergence and draining."""

    def wait_equal(self, tables: dict[str, list[str]], timeout: float = EVENTUALLY) -> None:
        super().wait_equal(tables, timeout)

    def wait_drained(self, timeout: float = EVENTUALLY) -> None:
        super().wait_drained(timeout)


def make_template(admin_dsn: str, dsn_of: Callable[[str], str], name: str) -> str:
    """Create database `name` on a server and run every migration on it, once: test
    databases cloned from it (`create database x template name`, a file copy) start
    migrated, instead of paying yoyo's ~1.5 s per database per test. `Rig.setup()`
    still runs `migrate` on the clone (a no-op that checks nothing is pending) and
    `install`. Tests about migrating itself keep using empty databases."""
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(f'create database "{name}"')
    dsn = dsn_of(name)
    migrate(bench_rig.Rig(Path(tempfile.mkdtemp(prefix="sb-template-")), dsn, dsn, []).config)
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        # a clone needs the template without sessions: no connection may linger or come
        c.execute(f'alter database "{name}" with allow_connections false')
        c.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                  "where datname = %s", (name,))
    return name


def make_rig(new_db, tmp_path: Path, schema: str, links: list[dict[str, Any]],
             settings: dict[str, Any] | None = None, schema_b: str | None = None) -> Rig:
    """Two migrated databases (clones of the template), the schema on each, installed."""
    rig = Rig(tmp_path, new_db("a", migrated=True), new_db("b", migrated=True), links, settings)
    rig.execute("a", schema)
    rig.execute("b", schema_b or schema)
    rig.setup()
    return rig


def link(name: str, table: str, key: list[str], direction: str = "both", **extra: Any) -> dict:
    return {"name": name, "a": {"peer": "a", "table": table}, "b": {"peer": "b", "table": table},
            "key": key, "direction": direction, **extra}


# On the source: when each take statement ran. A statement-level trigger fires
# even when the take deletes no row, so an empty take (the drain found nothing
# and is about to sleep) leaves its time here too.
CLAIM_LOG = """
create table public.claims (at timestamptz not null);
create function public.log_claim() returns trigger language plpgsql as $$
begin
    if current_query() like '%for update skip locked%' then
        insert into public.claims values (clock_timestamp());
    end if;
    return null;
end $$;
create trigger log_claim after delete on sync.queue
    for each statement execute function public.log_claim();
"""
