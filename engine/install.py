"""`syncbridge install` / `uninstall`: capture on the source sides of links."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg

from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config
from syncbridge.engine.postgres import base, capture, two_way
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.validate import shapes, unfilled_columns


def _source_sides(config: Config, name: str) -> list[str]:
    return [src for src, _ in config.links[name].directions()]


def install(config: Config, links: list[str] | None = None,
            fix_sequences: bool = False) -> Iterator[str]:
    link_shapes = shapes(config, links)
    unfilled_columns(config, link_shapes)
    for name, shape in link_shapes.items():
        for side in _source_sides(config, name):
            s = shape.link.side(side)
            peer = config.peers[s.peer]
            if peer.dialect == "sqlserver":
                from syncbridge.engine.sqlserver.capture import install_capture

                notes: list[str] = []
                install_capture(peer, s, retention=int(config.setting("ct_retention_days")),
                                notes=notes, timeouts=_mssql_timeouts(config))
                yield from (f"{name}: warning: {n}" for n in notes)
            else:
                with psycopg.connect(peer.dsn) as conn:
                    capture.install(conn, shape, side)
            yield f"{name}: capture installed on {s.peer} {s.qualified}"
        yield from two_way.user_triggers(config, shape)
        if two_way_postgres(config, shape):
            yield from two_way.key_ranges(config, shape, fix_sequences)
            # capture is on before the base is read: a change made meanwhile is queued
            seeded = base.seed(config, shape)
            yield seeded.report()
            if not seeded.differing:
                continue  # both sides agree: nothing for a backfill to send
        for src, dst in shape.link.directions():
            note = _sink_note(config, shape, src, dst)
            if note:
                yield note


def two_way_postgres(config: Config, shape: LinkShape) -> bool:
    """Both sides on Postgres and changes both ways: the link keeps base images."""
    link = shape.link
    return link.direction == "both" and all(
        config.peers[link.side(s).peer].dialect == "postgres" for s in ("a", "b"))


def _sink_note(config: Config, shape: LinkShape, src: str, dst: str) -> str | None:
    """Existing rows on the sink are not copied by capture: say what to run."""
    s = shape.link.side(src)
    if config.peers[s.peer].dialect != "postgres":
        return None
    with psycopg.connect(config.peers[s.peer].dsn) as conn:
        has_rows = conn.execute(pg_sql.READ.compose(
            "has_rows", table=pg_sql.source_rows(shape, src))).fetchone()[0]
    if not has_rows:
        return None
    side = f" --side {src}" if src != shape.link.directions()[0][0] else ""  # default: a
    return (f"{shape.link.name}: {s.qualified} on {s.peer} holds rows; rows that were there "
            f"before capture was installed reach the other side only after "
            f"`syncbridge backfill {shape.link.name}{side}` (`syncbridge check "
            f"{shape.link.name}` tells whether the sides differ)")


def _mssql_timeouts(config: Config):  # noqa: ANN202 - mssql_peer imported lazily
    from syncbridge.engine.sqlserver.connection import Timeouts

    return Timeouts(config.setting("mssql_login_timeout"), config.setting("mssql_query_timeout"),
                    config.setting("mssql_lock_timeout"))


def _ct_readers(config: Config, keep: set[str]) -> set[tuple[str, str, str]]:
    """(peer, schema, table) of every SQL Server source side of the links in `keep`."""
    out = set()
    for name in keep:
        link = config.links[name]
        for src, _ in link.directions():
            s = link.side(src)
            if config.peers[s.peer].dialect == "sqlserver":
                out.add((s.peer, s.schema, s.table))
    return out


def uninstall(config: Config, links: list[str] | None = None) -> Iterator[str]:
    chosen = links or list(config.links)
    # Change tracking is per table: turning it off destroys its history for every reader.
    # Only a source side is ever turned off, and only when no remaining link reads it.
    still_read = _ct_readers(config, set(config.links) - set(chosen))
    done: set[tuple[str, str, str]] = set()
    for name in chosen:
        link = config.links[name]
        sources = {src for src, _ in link.directions()}
        for side in ("a", "b"):
            s = link.side(side)
            peer = config.peers[s.peer]
            if peer.dialect == "sqlserver":
                from syncbridge.engine.sqlserver.capture import uninstall_capture

                table = (s.peer, s.schema, s.table)
                if side not in sources:
                    yield (f"{name}: {s.peer} {s.qualified} is only a sink; change tracking "
                           "left as is")
                    continue
                if table in still_read:
                    yield (f"{name}: change tracking left on for {s.peer} {s.qualified}: another "
                           "link reads it")
                    continue
                if table not in done:
                    done.add(table)
                    uninstall_capture(peer, s)
            else:
                with psycopg.connect(peer.dsn) as conn:
                    capture.uninstall(conn, link, side)
            yield f"{name}: capture removed from {s.peer} {s.qualified}"
