"""The conflict check of a two-way link's SQL Server -> Postgres direction (CtToPgDrain),
inside the Postgres sink transaction, as PgDrain does it.

Each incoming row's image is read through the sink table's own types (PgRows),
the sink row and its base come from the sink's sync.row_state (`state_read`),
and conflicts.decide settles it. The bases of the keys settled are written in
the same sink transaction; a sink row that won (or a merged row) is signalled
back with op R in the sink's sync.queue, like PgDrain's resignal. Once the sink
committed, the SQL Server side's copy of the bases follows (its own
transaction): a crash in between leaves that copy older, which can only make
the next SQL Server-bound change of such a key look like a conflict (settled by
the policy), never skip one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import asyncpg

from syncbridge.engine import conflicts, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Link
from syncbridge.engine.contract import Item, Outcome
from syncbridge.engine.hub import resolutions
from syncbridge.engine.postgres.sql import PgLinkSql
from syncbridge.engine.sqlserver import convert
from syncbridge.engine.sqlserver.peer import MssqlPeer
from syncbridge.engine.sqlserver.two_way import Candidate, PgRows, Settler, state_entry

QUEUE = sqlfiles.Queries("postgres/queue.sql")  # the queue statements PgDrain uses too


@dataclass
class Settled:
    """Bases and conflicts of one sink transaction, beyond its rows."""

    states: list[tuple[str, str | None]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # source keys already in step


class PgSinkSettle:
    """Two-way settlement of CtToPgDrain (its base class); uses the attributes below."""

    shape: LinkShape
    link: Link
    src: str
    dst: str
    sql: PgLinkSql
    mssql: MssqlPeer
    sink: asyncpg.Pool
    hub: asyncpg.Pool
    pg_rows: PgRows
    settler: Settler
    to_sink: dict[str, str]  # side-a column -> sink column
    origin: str

    async def _settle(self, conn: asyncpg.Connection, ups: list[Item], dels: list[Item],
                      forced: set[str], out: Outcome, unknown_base: bool = False
                      ) -> tuple[list[Item], list[Item], Settled]:
        """Keep only what should be applied; record bases of skipped rows and conflicts.
        unknown_base: a base never recorded counts as unknown (the first resync)."""
        settled = Settled()
        items = dels + ups
        if not items:
            return ups, dels, settled
        for item, (image, _) in zip(ups, await self.pg_rows.read(conn, [i.payload for i in ups]),
                                    strict=True):
            item.image = image
        state = {convert.norm(r["ka"]): r for r in await conn.fetch(
            self.sql.state_read, convert.json_array([i.sink_key for i in items]),
            self.link.name)}
        keep: list[Item] = []
        for item in items:
            st = state[convert.norm(item.state_key)]
            item.state_key = st["ka"]  # as Postgres prints it: the base's key on both sides
            known = st["known"] and not (unknown_base and st["last"] is None)
            c = Candidate(item.state_key, item.source_key, item.image, st["cur"], st["last"], known,
                          convert.norm(item.source_key) in forced)
            v = await self.settler.verdict(c, out.problems)
            if v is None:
                continue
            if v.conflict:
                settled.conflicts.append(self.settler.entry(c, v))
            if v.action == conflicts.APPLY:
                keep.append(item)
            elif v.action == conflicts.SKIP:
                settled.states.append((item.state_key, item.image))
                settled.skipped.append(item.source_key)
            elif v.action == conflicts.KEEP_SINK:
                out.resignal.append(item.sink_key)
            elif v.action == conflicts.MERGE:
                keep.append(self._merged(item, v.row))
                out.resignal.append(item.sink_key)  # the source gets the merged row too
        return ([i for i in keep if i.image is not None], [i for i in keep if i.image is None],
                settled)

    def _merged(self, item: Item, row: conflicts.Image) -> Item:
        """The item carrying a merged (or resolver's) row: texts, which the upsert reads
        through the sink's input functions like any row."""
        if row is None:
            return Item(item.source_key, item.sink_key, item.state_key, item.sink_key, None,
                        item.attempts)
        payload = json.dumps({self.to_sink[c]: v for c, v in row.items()}, ensure_ascii=False)
        return Item(item.source_key, item.sink_key, item.state_key, payload, conflicts.dump(row),
                    item.attempts)

    async def _remember(self, conn: asyncpg.Connection, out: Outcome, settled: Settled,
                        batch_id: uuid.UUID) -> None:
        """In the sink transaction: bases of what was applied or skipped, the resignals,
        and the conflicts (on the hub before the commit: a crash can repeat them, and a
        replay of one batch id adds nothing)."""
        settled.states += [(i.state_key, i.image) for i in out.applied]
        if settled.states:
            await conn.execute(QUEUE["state_write"], self.link.name, convert.json_array(
                state_entry(k, image) for k, image in settled.states))
        if out.resignal:
            await conn.execute(QUEUE["resignal"], self.link.name, self.dst,
                               convert.json_array(out.resignal))
        if settled.conflicts:
            target = conn if self.hub is self.sink else self.hub
            await resolutions.record(target, self.link.name,
                                 self.link.conflict, batch_id,
                                 convert.json_array(settled.conflicts))

    async def write_settled(self, row: conflicts.Image, sink_key: str) -> None:
        """Write a settled merge (an operator's choice) on this drain's Postgres sink, as
        the bridge's own write; the caller then re-sends that side's row the other way."""
        async with self.sink.acquire() as conn, conn.transaction():
            await conn.execute(QUEUE["set_origin"], self.origin)
            if row is None:
                await conn.execute(self.sql.delete, convert.json_array([sink_key]))
            else:
                await conn.execute(self.sql.upsert, convert.json_array([json.dumps(
                    {self.to_sink[c]: v for c, v in row.items()}, ensure_ascii=False)]))
