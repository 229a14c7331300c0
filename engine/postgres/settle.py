"""Two-way links at a Postgres sink: which of a batch's rows to apply, and what to
remember (PgDrain's base class; engine/conflicts.py decides, over column-text images).

Each row is compared with the sink's current row and the link's last-synced image
(sync.row_state): an edit on one side only is applied, the same edit on both is
skipped, edits on both are a conflict decided by the link's policy (a resolver
function may decide; `manual` keeps the sink's row until an operator settles it).
The new base images are written in the sink transaction and, after the sink
committed, at the source (drain.py `_finish`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg

from syncbridge.engine import conflicts, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Link
from syncbridge.engine.contract import Item, Outcome, json_array, json_object
from syncbridge.engine.hub import resolutions
from syncbridge.engine.postgres.sql import PgLinkSql

SQL = sqlfiles.Queries("postgres/queue.sql")
log = logging.getLogger("syncbridge.drain")


class Settling:
    """The two-way half of PgDrain."""

    link: Link
    shape: LinkShape
    src: str
    dst: str
    name: str
    sql: PgLinkSql
    origin: str
    sink: asyncpg.Pool
    hub: asyncpg.Pool
    resolver: str | None
    to_sink: dict[str, str]

    async def _settle(self, conn: asyncpg.Connection, upserts: list[Item], deletes: list[Item],
                      forced: set[str], out: Outcome) -> tuple[list[Item], list[Item]]:
        """Two-way links: keep only what should be applied; record conflicts."""
        items = deletes + upserts
        if not items:
            return upserts, deletes
        state = {r["ka"]: r for r in await conn.fetch(
            self.sql.state_read, json_array([i.sink_key for i in items]), self.link.name)}
        keep: list[Item] = []
        for item in items:
            st = state[item.state_key]
            source, sink = conflicts.load(item.image), conflicts.load(st["cur"])
            base = conflicts.load(st["last"])
            v = conflicts.decide(self.link, self.src, source, sink, base, st["known"],
                                 item.source_key in forced)
            if v.action == conflicts.RESOLVE:
                v = await self._resolve(item, source, sink, base, out)
                if v is None:
                    continue
            if v.conflict:
                out.conflicts.append(self._conflict(item, st, v))
            if v.action == conflicts.APPLY:
                keep.append(item)
            elif v.action == conflicts.SKIP:
                out.synced.append(json_object(key=item.state_key, image=item.image or "null"))
            elif v.action == conflicts.KEEP_SINK:
                out.resignal.append(item.sink_key)
            elif v.action == conflicts.MERGE:
                keep.append(self._merged(item, v.row))
                out.resignal.append(item.sink_key)  # the source gets the merged row too
        return [i for i in keep if i.image is not None], [i for i in keep if i.image is None]

    async def write_settled(self, row: conflicts.Image, sink_key: str) -> None:
        """Write a settled merge (an operator's choice) on this drain's sink side, as the
        bridge's own write; the caller then re-sends that side's row the other way."""
        async with self.sink.acquire() as conn, conn.transaction():
            await conn.execute(SQL["set_origin"], self.origin)
            if row is None:
                await conn.execute(self.sql.delete, json_array([sink_key]))
            else:
                await conn.execute(self.sql.upsert, json_array([self._payload(row)]))

    def _payload(self, row: dict[str, str | None]) -> str:
        return json.dumps({self.to_sink[c]: v for c, v in row.items()}, ensure_ascii=False)

    def _merged(self, item: Item, row: conflicts.Image) -> Item:
        """The item carrying a merged (or resolver's) row instead of the source's."""
        if row is None:
            return Item(item.source_key, item.sink_key, item.state_key, item.sink_key, None,
                        item.attempts)
        payload = self._payload(row)
        return Item(item.source_key, item.sink_key, item.state_key, payload, conflicts.dump(row),
                    item.attempts)

    async def _resolve(self, item: Item, source: conflicts.Image, sink: conflicts.Image,
                       base: conflicts.Image, out: Outcome) -> conflicts.Verdict | None:
        """conflict = "function:s.fn" (engine/hub/resolutions.run_resolver)."""
        return await resolutions.run_resolver(
            self.hub, self.resolver, self.link, self.src, item.state_key, self.name,
            item.source_key, source, sink, base, out.problems)

    def _conflict(self, item: Item, st: Any, v: conflicts.Verdict) -> str:
        images = {self.src: item.image or "null", self.dst: st["cur"] or "null"}
        policy = v.policy or self.link.conflict
        log.warning("event=conflict link=%s key=%s policy=%s winner=%s columns=%s",
                    self.link.name, item.state_key, policy, v.winner or "manual",
                    ",".join(v.columns) or "-")
        return json_object(key=item.state_key, a=images["a"], b=images["b"],
                           last=st["last"] or "null", winner=json.dumps(v.winner),
                           columns=json.dumps(list(v.columns)), policy=json.dumps(policy))

    async def _remember(self, conn: asyncpg.Connection, out: Outcome) -> None:
        out.synced.extend(json_object(key=i.state_key, image=i.image or "null")
                          for i in out.applied)
        if out.synced:
            await conn.execute(SQL["state_write"], self.link.name, json_array(out.synced))
        if out.resignal:
            await conn.execute(SQL["resignal"], self.link.name, self.dst, json_array(out.resignal))

