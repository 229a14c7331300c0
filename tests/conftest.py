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

from syncbridge.engine.embedded import EmbeddedPostgres


class PgServer:
    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_dsn = admin_dsn
        self.embedded = embedded

    def dsn(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + database))

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute(f'create database "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    dsn = os.environ.get("SYNC_TEST_PG_DSN")
    if dsn:
        yield PgServer(dsn, None)
        return
    pg = EmbeddedPostgres().start()
    try:
        yield PgServer(pg.dsn(), pg)
    finally:
        pg.destroy()


@pytest.fixture
def new_db(pg_server: PgServer) -> Iterator[Callable[[str], str]]:
    """Factory: new_db("portal") -> DSN of a fresh, empty database."""
    made: list[str] = []

    def make(label: str = "db") -> str:
        name = f"t_{label}_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return pg_server.create_database(name)

    yield make
    for name in made:
        pg_server.drop_database(name)
