"""Read both catalogs of every link and check the config against them."""

from __future__ import annotations

import psycopg

from . import catalog
from .catalog import LinkShape
from .config import Config, ConfigError, Link


def _pg_connect(config: Config, peer: str) -> psycopg.Connection:
    try:
        return psycopg.connect(config.peers[peer].dsn, autocommit=True)
    except psycopg.OperationalError as e:
        raise ConfigError(f"peer {peer!r}: cannot connect: {e}".strip()) from None


def read_table(config: Config, conns: dict, link: Link, side: str) -> catalog.Table | None:
    s = link.side(side)
    peer = config.peers[s.peer]
    if peer.dialect == "sqlserver":
        from .mssql_peer import read_table_sync  # only with a SQL Server peer

        return read_table_sync(peer, s)
    if s.peer not in conns:
        conns[s.peer] = _pg_connect(config, s.peer)
    return catalog.read_pg_table(conns[s.peer], s)


def type_checker(config: Config, link: Link):
    da = config.peers[link.a.peer].dialect
    db = config.peers[link.b.peer].dialect
    if da == db == "postgres":
        return catalog.compatible
    from .mssql_types import type_checker as cross

    return cross(da, db)


def shapes(config: Config, links: list[str] | None = None) -> dict[str, LinkShape]:
    """Validated shapes of the named links (all by default); ConfigError on the first problem."""
    conns: dict[str, psycopg.Connection] = {}
    try:
        out = {}
        for name in links or list(config.links):
            if name not in config.links:
                raise ConfigError(f"no link named {name!r} in the config")
            link = config.links[name]
            a = read_table(config, conns, link, "a")
            b = read_table(config, conns, link, "b")
            out[name] = catalog.shape(link, a, b, type_checker(config, link))
        return out
    finally:
        for c in conns.values():
            c.close()
