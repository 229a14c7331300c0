"""`syncbridge install` / `uninstall`: capture on the source sides of links."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from psycopg import sql

from . import base, capture, two_way
from .config import Config
from .validate import shapes, unfilled_columns


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
                from .mssql_peer import install_capture

                install_capture(peer, s)
            else:
                with psycopg.connect(peer.dsn) as conn:
                    capture.install(conn, shape, side)
            yield f"{name}: capture installed on {s.peer} {s.qualified}"
        yield from two_way.user_triggers(config, shape)
        if _two_way_postgres(config, shape):
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


def _two_way_postgres(config: Config, shape) -> bool:
    link = shape.link
    return link.direction == "both" and all(
        config.peers[link.side(s).peer].dialect == "postgres" for s in ("a", "b"))


def _sink_note(config: Config, shape, src: str, dst: str) -> str | None:
    """Existing rows on the sink are not copied by capture: say what to run."""
    s = shape.link.side(src)
    if config.peers[s.peer].dialect != "postgres":
        return None
    with psycopg.connect(config.peers[s.peer].dsn) as conn:
        has_rows = conn.execute(sql.SQL("select exists (select 1 from {}.{})").format(
            sql.Identifier(s.schema), sql.Identifier(s.table))).fetchone()[0]
    if not has_rows:
        return None
    side = f" --side {src}" if src != shape.link.directions()[0][0] else ""  # default: a
    return (f"{shape.link.name}: {s.qualified} on {s.peer} already holds rows that capture "
            f"has not signalled; run `syncbridge backfill {shape.link.name}{side}` to send them")


def uninstall(config: Config, links: list[str] | None = None) -> Iterator[str]:
    for name in links or list(config.links):
        link = config.links[name]
        for side in ("a", "b"):
            s = link.side(side)
            peer = config.peers[s.peer]
            if peer.dialect == "sqlserver":
                from .mssql_peer import uninstall_capture

                uninstall_capture(peer, s)
            else:
                with psycopg.connect(peer.dsn) as conn:
                    capture.uninstall(conn, link, side)
            yield f"{name}: capture removed from {s.peer} {s.qualified}"
