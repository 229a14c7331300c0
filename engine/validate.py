"""Read both catalogs of every link and check the config against them."""

from __future__ import annotations

import psycopg

from syncbridge.engine import catalog
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError, Link
from syncbridge.engine.errors import PeerUnreachable


def _pg_connect(config: Config, peer: str) -> psycopg.Connection:
    try:
        return psycopg.connect(config.peers[peer].dsn, autocommit=True)
    except psycopg.OperationalError as e:
        why = " ".join(str(e).split())
        raise PeerUnreachable(f"peer {peer!r}: cannot connect: {why}") from None


def read_table(config: Config, conns: dict, link: Link, side: str) -> catalog.Table | None:
    s = link.side(side)
    peer = config.peers[s.peer]
    if peer.dialect == "sqlserver":
        # only with a SQL Server peer
        from syncbridge.engine.sqlserver.capture import read_table_sync

        return read_table_sync(peer, s)
    if s.peer not in conns:
        conns[s.peer] = _pg_connect(config, s.peer)
    return catalog.read_pg_table(conns[s.peer], s)


def type_checker(config: Config, link: Link):
    da = config.peers[link.a.peer].dialect
    db = config.peers[link.b.peer].dialect
    if da == db == "postgres":
        return catalog.compatible
    from syncbridge.engine.sqlserver.types import type_checker as cross

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


def unfilled_columns(config: Config, link_shapes: dict[str, LinkShape]) -> None:
    """A sink column that is NOT NULL without a default and that the link does not fill
    would dead-letter every insert: refuse it at install, naming the column."""
    for name, shape in link_shapes.items():
        for _, dst in shape.link.directions():
            side = shape.link.side(dst)
            if config.peers[side.peer].dialect != "postgres":
                continue
            with _pg_connect(config, side.peer) as conn:
                rows = conn.execute(catalog.SQL["must_fill"], (catalog.quote_qualified(side),))
                must = [r[0] for r in rows]
            missing = [c for c in must if c not in shape.cols(dst)]
            if missing:
                raise ConfigError(
                    f"link {name!r}: column {missing[0]!r} of {side.qualified} on peer "
                    f"{side.peer!r} is NOT NULL without a default and the link does not fill "
                    "it, so every insert would be dead-lettered; map it in columns, give it "
                    "a default, or allow NULL")


def webhook_tables(config: Config) -> None:
    """Every webhook topic's table exists on its peer and has every mapped column."""
    from syncbridge.engine.webhooks.config import parse_webhooks, targets

    conns: dict[str, psycopg.Connection] = {}
    try:
        for where, tmap, side in targets(config, parse_webhooks(config, secrets=False)):
            if not config.peers[side.peer].dsn:  # loaded hub-only (the webhook app)
                continue
            if side.peer not in conns:
                conns[side.peer] = _pg_connect(config, side.peer)
            table = catalog.read_pg_table(conns[side.peer], side)
            if table is None:
                raise ConfigError(f"{where}: table {side.qualified} does not exist on peer "
                                  f"{side.peer!r}")
            for column in tmap.columns:
                if column not in table.columns:
                    raise ConfigError(f"{where}: column {column!r} does not exist in "
                                      f"{side.qualified} on peer {side.peer!r}")
    finally:
        for c in conns.values():
            c.close()
