"""Apply the sync schema to every peer with yoyo-migrations.

Each Postgres peer gets migrations/postgres (queue, sink bookkeeping, status);
a database named by two peers is migrated once. SQL Server peers get
migrations/sqlserver through the small mssql yoyo backend.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from importlib import resources

from yoyo import get_backend, read_migrations

from syncbridge.engine.config import Config, Peer

log = logging.getLogger("syncbridge.migrate")


def yoyo_url(peer: Peer) -> str:
    dsn = peer.dsn
    if peer.dialect == "postgres":
        for prefix in ("postgresql://", "postgres://"):
            if dsn.startswith(prefix):
                return "postgresql+psycopg://" + dsn[len(prefix):]
        raise ValueError(f"peer {peer.name!r}: migrate needs a postgresql:// URL DSN")
    from syncbridge.engine.sqlserver.yoyo import (
        yoyo_url as mssql_url,  # only with a SQL Server peer
    )

    return mssql_url(dsn)


def migrate(config: Config, rollback: bool = False) -> list[tuple[str, int]]:
    """Apply (or roll back) pending migrations; returns (peer, count) per database."""
    done: dict[str, tuple[str, int]] = {}
    for peer in config.peers.values():
        if peer.dsn in done:
            continue
        done[peer.dsn] = (peer.name, _migrate_one(peer, rollback))
    return list(done.values())


def _migrate_one(peer: Peer, rollback: bool) -> int:
    folder = resources.files("syncbridge.migrations") / peer.dialect
    with ExitStack() as stack:
        path = stack.enter_context(resources.as_file(folder))
        migrations = read_migrations(str(path))
        backend = get_backend(yoyo_url(peer), migration_table="_syncbridge_migrations")
        with backend.lock():
            if rollback:
                todo = backend.to_rollback(migrations)
                backend.rollback_migrations(todo)
            else:
                todo = backend.to_apply(migrations)
                backend.apply_migrations(todo)
        log.info("peer=%s migrations=%d rollback=%s", peer.name, len(todo), rollback)
        return len(todo)
