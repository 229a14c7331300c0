"""Conflict checks of two-way links with a SQL Server side: the same detection and
policies as Postgres links (engine/conflicts.py), with each base kept by the side
the bridge writes, in the same transaction as the rows.

Images are compared as the Postgres texts of the values, on both sides: a row
read from SQL Server is converted exactly (convert.py) and read back through
the Postgres table's own column types (`PgRows`, the `pg_rows` statement), so
it has the very texts the Postgres row would show after the apply. The bases
are such images: in the Postgres peer's sync.row_state when the sink is
Postgres, in [sync].[row_state] when the sink is SQL Server; after the sink
committed, the source's copy is written too (as Postgres links do), so the
next change in the other direction is judged against the same base.

`Settler` turns one incoming row into a verdict (resolver functions included)
and the sync.conflicts entry; each drain applies the verdicts with its own sink.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
from psycopg import sql

from syncbridge.engine import conflicts, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Link
from syncbridge.engine.contract import RowProblem
from syncbridge.engine.hub import resolutions
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.sqlserver import convert

log = logging.getLogger("syncbridge.mssql_drain")
SQL = sqlfiles.Queries("queries/mssql_bridge.sql")


class PgRows:
    """Rows as JSON (a Postgres side's column names) read through that table's types:
    the image (a-named column texts) and the typed values, in the order given."""

    def __init__(self, shape: LinkShape, side: str) -> None:
        table = shape.table(side)
        cols = shape.cols(side)
        json_cols = {c for c in cols if table.columns[c].base in pg_sql.JSON_TYPES}
        self.cols = cols
        self.statement = SQL.render(
            "pg_rows",
            image=pg_sql.text_obj(shape.cols("a"), "t", cols),
            typed_list=sql.SQL(", ").join(
                sql.SQL("{} as {}").format(sql.Identifier("t", c), sql.Identifier(f"c{i}"))
                for i, c in enumerate(cols)),
            typed=sql.SQL(", ").join(
                sql.SQL("{}::{} as {}").format(sql.Identifier("r", c),
                                               sql.SQL(table.columns[c].type), sql.Identifier(c))
                if c in json_cols else sql.Identifier("r", c) for c in cols),
            defs=sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(
                    "text" if c in json_cols else table.columns[c].type)) for c in cols),
        )

    async def read(self, conn: asyncpg.Connection | asyncpg.Pool,
                   payloads: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """(image text, {column: typed value}) per payload (JSON object texts)."""
        if not payloads:
            return []
        rows = await conn.fetch(self.statement, convert.json_array(payloads))
        return [(r["image"], {c: r[f"c{i}"] for i, c in enumerate(self.cols)}) for r in rows]


@dataclass
class Candidate:
    """One incoming row of a two-way link with everything the decision needs."""

    ka: str  # the key named as on side a (Postgres jsonb text): the base's key
    source_key: str  # as the dead letters and logs name it
    source: str | None  # the incoming row's image text (None: gone)
    sink: str | None  # the sink's current image text (None: absent)
    base: str | None  # the base image text (None: absent or none)
    known: bool
    forced: bool  # a resend / resolution: applied unchecked


class Settler:
    """conflicts.decide for one direction of a link, resolver functions included."""

    def __init__(self, link: Link, source_side: str, hub: asyncpg.Pool, name: str) -> None:
        self.link, self.src, self.hub, self.name = link, source_side, hub, name
        self.dst = "b" if source_side == "a" else "a"
        self.resolver = resolutions.resolver_sql(link.conflict)

    async def verdict(self, c: Candidate, problems: list[RowProblem]
                      ) -> conflicts.Verdict | None:
        """What to do with `c`; None when a resolver failed (the key is dead-lettered)."""
        source, sink = conflicts.load(c.source), conflicts.load(c.sink)
        base = conflicts.load(c.base)
        v = conflicts.decide(self.link, self.src, source, sink, base, c.known, c.forced)
        if v.action != conflicts.RESOLVE:
            return v
        return await resolutions.run_resolver(
            self.hub, self.resolver, self.link, self.src, c.ka, self.name, c.source_key,
            source, sink, base, problems)

    def entry(self, c: Candidate, v: conflicts.Verdict) -> str:
        """The sync.conflicts entry (record_conflict) of a conflict, logged without values."""
        log.warning("event=conflict link=%s key=%s policy=%s winner=%s columns=%s",
                    self.link.name, c.ka, v.policy or self.link.conflict, v.winner or "manual",
                    ",".join(v.columns) or "-")
        images = {self.src: c.source or "null", self.dst: c.sink or "null"}
        return ("{" + f'"key":{c.ka},"a":{images["a"]},"b":{images["b"]},'
                f'"last":{c.base or "null"},"winner":{json.dumps(v.winner)},'
                f'"columns":{json.dumps(list(v.columns))},'
                f'"policy":{json.dumps(v.policy or self.link.conflict)}' + "}")


def image_text(row: conflicts.Image) -> str | None:
    """An image as stored in a base (conflicts.dump; None for an absent row)."""
    return None if row is None else conflicts.dump(row)


def state_entry(ka: str, image: str | None) -> str:
    """A Postgres sync.row_state entry (bridge.sql state_write) from texts."""
    return "{" + f'"key":{ka},"image":{image or "null"}' + "}"
