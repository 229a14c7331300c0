"""The drains of links with a SQL Server side, and the factory the daemon calls.

Same pipeline and guarantees as `postgres.drain.PgDrain`, adapted to what each
side records: `ct_to_pg.CtToPgDrain` (SQL Server source, change tracking in,
Postgres sink) and `pg_to_ct.PgToCtDrain` (Postgres source, sync.queue in, SQL
Server sink). Values travel as engine/sqlserver/convert.py says.

Two-way links with a SQL Server side are conflict-checked like Postgres links
(two_way.py, ct_settle.py): each sink keeps the bases in the transaction that
applies the rows. SQL Server <-> SQL Server links are not supported yet
(`make_drain` refuses).
"""

from __future__ import annotations

import logging

import asyncpg

from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError
from syncbridge.engine.sqlserver.connection import Timeouts
from syncbridge.engine.sqlserver.ct_to_pg import CtToPgDrain
from syncbridge.engine.sqlserver.peer import MssqlPeer
from syncbridge.engine.sqlserver.pg_to_ct import PgToCtDrain

log = logging.getLogger("syncbridge.mssql_drain")


def make_drain(shape: LinkShape, src: str, dst: str, config: Config,
               pools: dict[str, asyncpg.Pool], mssql: dict[str, MssqlPeer],
               hub: asyncpg.Pool, max_attempts: int = 8) -> CtToPgDrain | PgToCtDrain:
    """The drain of one (link, direction) with a SQL Server side; one MssqlPeer per peer."""
    link = shape.link
    peers = {s: config.peers[link.side(s).peer] for s in (src, dst)}
    if all(p.dialect == "sqlserver" for p in peers.values()):
        raise ConfigError(
            f"link {link.name!r}: SQL Server to SQL Server links are not supported yet "
            f"({peers[src].name} -> {peers[dst].name}); sync each through a Postgres peer")

    def peer(side: str) -> MssqlPeer:
        name = peers[side].name
        if name not in mssql:
            mssql[name] = MssqlPeer(peers[side], timeouts=Timeouts(
                config.setting("mssql_login_timeout"), config.setting("mssql_query_timeout"),
                config.setting("mssql_lock_timeout")))
            # links of one peer share one poll per interval (issue 18 item 19)
            mssql[name].poll_max_age = 0.5 * config.setting("ct_poll_interval")
        return mssql[name]

    if peers[src].dialect == "sqlserver":
        return CtToPgDrain(shape, src, peer(src), pools[peers[dst].name], hub, max_attempts,
                           poll_interval=config.setting("ct_poll_interval"),
                           retention_days=config.setting("ct_retention_days"))
    return PgToCtDrain(shape, src, pools[peers[src].name], peer(dst), hub, max_attempts)

