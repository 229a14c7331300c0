"""Migrations against the canonical schema (STYLE.md 9): procrastinate's
tests/migration/test_migration.py and graphile-worker's committed schema dump,
plus River's up / down / up round trip.

The canonical text is tests/data/sync_schema.sql, a normalised dump of the
`sync` schema after every migrations/postgres file is applied (made by
tests/schema_snapshot.py from the catalogs). When a migration changes the
schema on purpose, regenerate it and commit the diff with the migration:

    SYNCBRIDGE_WRITE_SCHEMA=1 pytest tests/test_schema_snapshot.py

(with the variable set the test writes the file instead of comparing, and says so).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import psycopg
from schema_snapshot import header, snapshot
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from syncbridge.engine.config import parse
from syncbridge.engine.migrate import migrate, yoyo_url

CANONICAL = Path(__file__).parent / "data" / "sync_schema.sql"
WRITE = os.environ.get("SYNCBRIDGE_WRITE_SCHEMA") == "1"


def _config(dsn: str):
    return parse({"peers": {"hub": {"dialect": "postgres", "dsn": dsn}}})


@contextmanager
def _yoyo(dsn: str) -> Iterator[tuple]:
    """yoyo's backend and the Postgres migrations in id order, as `syncbridge migrate`
    reads them (engine/migrate.py)."""
    config = _config(dsn)
    folder = resources.files("syncbridge.migrations") / "postgres"
    with resources.as_file(folder) as path:
        migrations = sorted(read_migrations(str(path)), key=lambda m: m.id)
        backend = get_backend(yoyo_url(config.hub_peer), migration_table="_syncbridge_migrations")
        try:
            yield backend, migrations
        finally:
            backend.connection.close()


def _drift(expected: str, got: str, what: str) -> str:
    diff = "".join(difflib.unified_diff(expected.splitlines(True), got.splitlines(True),
                                        "expected", what, n=2))
    return (f"{what} differs from {CANONICAL.name} (if the change is meant, regenerate: "
            f"SYNCBRIDGE_WRITE_SCHEMA=1 pytest tests/test_schema_snapshot.py):\n{diff}")


def test_migrations_produce_the_canonical_schema(new_db):
    dsn = new_db("schema")
    applied = migrate(_config(dsn))
    assert applied[0][1] > 0
    got = header(dsn) + snapshot(dsn)
    if WRITE:
        CANONICAL.parent.mkdir(exist_ok=True)
        CANONICAL.write_text(got)
        print(f"wrote {CANONICAL} ({len(got.splitlines())} lines)")
        return
    assert CANONICAL.exists(), _drift("", got, "the migrated schema")
    expected = CANONICAL.read_text()
    made, here = expected.splitlines()[0], got.splitlines()[0]
    assert here == made, ("the canonical schema was made with another PostgreSQL major "
                          f"version (catalog text differs between them): {made!r}, here {here!r}")
    assert got == expected, _drift(expected, got, "the migrated schema")


def test_rollback_all_removes_the_schema_and_migrate_again_restores_it(new_db):
    dsn = new_db("schema")
    migrate(_config(dsn))
    first = snapshot(dsn)
    assert "create table sync.queue" in first
    [(_, rolled_back)] = migrate(_config(dsn), rollback=True)
    assert rolled_back == len(_migration_ids())
    assert snapshot(dsn) == ""
    with psycopg.connect(dsn) as c:
        assert c.execute("select to_regnamespace('sync')").fetchone() == (None,)
    migrate(_config(dsn))
    assert snapshot(dsn) == first, _drift(first, snapshot(dsn), "the schema after up/down/up")


def test_each_rollback_restores_the_schema_before_its_migration(new_db):
    """Apply migrations one by one; each one's rollback gives back exactly the
    schema of the step before, and re-applying it gives the same schema again."""
    dsn = new_db("schema")
    with _yoyo(dsn) as (backend, migrations):
        assert [m.id for m in migrations] == _migration_ids()
        before = snapshot(dsn)
        for m in migrations:
            with backend.lock():
                backend.apply_migrations(backend.to_apply(MigrationList([m])))
            after = snapshot(dsn)
            assert after != before, f"{m.id} changed nothing in the sync schema"
            with backend.lock():
                backend.rollback_migrations(backend.to_rollback(MigrationList([m])))
            assert snapshot(dsn) == before, _drift(before, snapshot(dsn),
                                                   f"the schema after rolling back {m.id}")
            with backend.lock():
                backend.apply_migrations(backend.to_apply(MigrationList([m])))
            assert snapshot(dsn) == after, _drift(after, snapshot(dsn),
                                                  f"the schema after re-applying {m.id}")
            before = after


def _migration_ids() -> list[str]:
    folder = resources.files("syncbridge.migrations") / "postgres"
    names = [f.name for f in folder.iterdir() if f.name.endswith(".sql")
             and not f.name.endswith(".rollback.sql")]
    return sorted(n.removesuffix(".sql") for n in names)
