"""`syncbridge adopt LINK`: accept a schema change on a paused link.

The bridge pauses a link when a linked table's columns or key change
(drain.SchemaChanged). Adopting it re-validates the link against both
catalogs (a column added on one side only is reported and stays unsynced until
the config maps it), re-installs capture (the key may have changed), records
base images in the new column set for every row equal on both sides (so a
column added on both sides is no change of any row), and resumes the link:
the running bridge picks up the new shape within a second.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config
from syncbridge.engine.hub.report import SQL as STATUS
from syncbridge.engine.install import two_way_postgres
from syncbridge.engine.postgres import base, capture
from syncbridge.engine.validate import shapes


def unlinked(shape: LinkShape) -> Iterator[str]:
    """Columns of either table that the link does not carry."""
    for i, side in enumerate(("a", "b")):
        linked = {p[i] for p in shape.pairs}
        s = shape.link.side(side)
        for col in shape.table(side).columns:
            if col not in linked:
                yield (f"{shape.link.name}: column {col} of {s.qualified} on {s.peer} is not "
                       "linked; map it in the link's `columns` (or add it on the other side) "
                       "to sync it")


def adopt(config: Config, links: list[str]) -> Iterator[str]:
    for name, shape in shapes(config, links).items():  # ConfigError names what is wrong
        yield from unlinked(shape)
        for src, _dst in shape.link.directions():
            s = shape.link.side(src)
            if config.peers[s.peer].dialect == "postgres":
                with psycopg.connect(config.peers[s.peer].dsn) as conn:
                    capture.install(conn, shape, src)
        if two_way_postgres(config, shape):
            yield base.seed(config, shape).report()
        with psycopg.connect(config.hub_peer.dsn, autocommit=True) as hub:
            was = hub.execute(sqlfiles.for_psycopg(STATUS["link_paused"]), (name,)).fetchone()
            hub.execute(sqlfiles.for_psycopg(STATUS["resume_link"]), (name,))
        reason = was[0] if was and was[0] else None
        yield (f"{name}: adopted ({reason}); the bridge resumes it" if reason
               else f"{name}: validated and adopted (it was not paused)")
