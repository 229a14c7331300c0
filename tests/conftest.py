"""Real PostgreSQL for every test: the embedded server, or SYNC_TEST_PG_DSN.

One server per session; each test that needs databases gets fresh ones from
`new_db`, so tests never see each other's queues or NOTIFY traffic.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from rigs import make_template
from syncbridge.engine.embedded import EmbeddedPostgres


class PgServer:
    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_dsn = admin_dsn
        self.embedded = embedded
        self.template: str | None = None  # the migrated template, made on first use

    def dsn(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + database))

    def create_database(self, name: str, migrated: bool = False) -> str:
        """migrated: a clone of the session's migrated template (rigs.make_template)."""
        clone = ""
        if migrated:
            if self.template is None:
                self.template = make_template(self.admin_dsn, self.dsn,
                                              f"t_migrated_{uuid.uuid4().hex[:8]}")
            clone = f' template "{self.template}"'
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute(f'create database "{name}"{clone}')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    dsn = os.environ.get("SYNC_TEST_PG_DSN")
    if dsn:
        server = PgServer(dsn, None)
        yield server
        if server.template:  # a shared server: leave it as we found it
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(f'drop database if exists "{server.template}"')
        return
    pg = EmbeddedPostgres().start()
    try:
        yield PgServer(pg.dsn(), pg)
    finally:
        pg.destroy()


@pytest.fixture
def new_db(pg_server: PgServer) -> Iterator[Callable[[str], str]]:
    """Factory: new_db("portal") -> DSN of a fresh, empty database;
    new_db("a", migrated=True): fresh, with every migration applied (a template clone)."""
    made: list[str] = []

    def make(label: str = "db", migrated: bool = False) -> str:
        name = f"t_{label}_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return pg_server.create_database(name, migrated)

    yield make
    for name in made:
        pg_server.drop_database(name)
