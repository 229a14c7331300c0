"""Read both catalogs of every link and check the config against them."""

from __future__ import annotations

import psycopg
from psycopg import sql

from syncbridge.engine import catalog
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError, Link, did_you_mean
from syncbridge.engine.errors import PeerUnreachable
from syncbridge.engine.postgres import sql as pg_sql


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
            for src, _ in link.directions():
                if link.where.get(src) is not None or pg_sql.transforms(out[name], src):
                    check_filters(conns[link.side(src).peer], out[name], src)
        return out
    finally:
        for c in conns.values():
            c.close()


def check_filters(conn: psycopg.Connection, shape: LinkShape, side: str) -> None:
    """A source side's `where` and `transform`s run against its table with `limit 0`
    (no row is read), so a typo or a wrong column is a ConfigError naming the link and
    quoting the server, at install and at every start, never a batch that cannot be read."""
    link, s = shape.link, shape.link.side(side)
    where = f"{s.qualified} on peer {s.peer!r}"
    table = pg_sql.table_name(shape, side)
    if side in link.where:
        _probe(conn, f"link {link.name!r}: where for side {side} ({where})", pg_sql.READ.compose(
            "probe_where", table=table, where=sql.SQL(link.where[side])))
    sink = "b" if side == "a" else "a"
    to_sink = dict(zip(shape.cols(side), shape.cols(sink), strict=True))
    for col, expr in pg_sql.transforms(shape, side).items():
        what = f"link {link.name!r}: transform of column {col!r}"
        if col in shape.key_cols(side):
            raise ConfigError(f"{what}: {col!r} is a key column; a transformed key would not "
                              "name the source row it came from (deletes and checks match "
                              "rows by key), so keys are carried as they are")
        if col not in to_sink:
            raise ConfigError(f"{what}: {col!r} is not a linked column of {where}"
                              + did_you_mean(col, to_sink))
        got = _probe(conn, f"{what} ({where})", pg_sql.READ.compose(
            "probe_transform", table=table, expr=sql.SQL(expr)))
        own, dst = shape.table(side).columns[col].type, shape.table(sink).columns[to_sink[col]]
        if got != own and not catalog.compatible(got, dst.type):
            raise ConfigError(
                f"{what} gives {got}, which does not fit column {to_sink[col]!r} "
                f"({dst.type}) on peer {link.side(sink).peer!r}: "
                f"{catalog.why_not(got, dst.type)}; cast the expression to {own}")


def _probe(conn: psycopg.Connection, what: str, stmt: sql.Composed) -> str:
    """Run a `limit 0` statement; the type of its first result column, as the catalog
    spells it (to compare with the sink column's)."""
    try:
        cur = conn.execute(stmt)
    except psycopg.Error as e:
        why = e.diag.message_primary or " ".join(str(e).split())
        raise ConfigError(f"{what} is not valid: {why}") from None
    assert cur.pgresult is not None
    oid, mod = cur.pgresult.ftype(0), cur.pgresult.fmod(0)
    with conn.transaction():
        conn.execute("set local search_path = pg_catalog")  # user types qualified (catalog.py)
        return str(conn.execute(pg_sql.READ["type_name"], (oid, mod)).fetchone()[0])


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
