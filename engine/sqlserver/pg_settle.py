"""The conflict check of a two-way link's Postgres -> SQL Server direction (PgToCtDrain),
inside the SQL Server sink's apply transaction (MssqlPeer.apply_two_way).

The sink rows and their bases in [sync].[row_state] are read under UPDLOCK,
HOLDLOCK; each sink row is rendered to Postgres texts through the source
table's types (PgRows) and compared with the source row's image and the base
(conflicts.decide). The rows decided, the bases of the keys settled and the
keys whose SQL Server row goes back ([sync].[resend]) are applied in the same
transaction; the conflicts are recorded on the hub before it commits (a replay
of one batch id adds nothing). The source's copy of the bases follows in
PgToCtDrain._finish, as PgDrain writes it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from syncbridge.engine import conflicts
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Link
from syncbridge.engine.contract import RowProblem
from syncbridge.engine.hub import resolutions
from syncbridge.engine.sqlserver import convert
from syncbridge.engine.sqlserver.changes import SinkState, TwoWayBatch
from syncbridge.engine.sqlserver.peer import MssqlPeer
from syncbridge.engine.sqlserver.two_way import Candidate, PgRows, Settler


@dataclass
class Change:
    """One row to upsert (or key to delete) at the SQL Server sink, in sink names."""

    source_key: str  # jsonb text, source names (as queued)
    values: dict[str, Any]  # sink column -> asyncpg value (keys only for a delete)
    delete: bool
    attempts: int = 0
    ka: str = ""  # two-way links: the key named as on side a (jsonb text)
    image: str | None = None  # two-way links: the source row's image text (None: gone)
    key: dict[str, Any] = field(default_factory=dict)  # sink key column -> value


@dataclass
class Settled:
    """What one two-way sub-batch decided besides its rows (kept once it committed)."""

    states: list[tuple[str, str | None]] = field(default_factory=list)
    resend: list[str] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


class SqlServerSinkSettle:
    """Two-way settlement of PgToCtDrain (its base class); uses the attributes below."""

    shape: LinkShape
    link: Link
    src: str
    dst: str
    source: asyncpg.Pool
    mssql: MssqlPeer
    hub: asyncpg.Pool
    ctx: bytes
    pg_rows: PgRows
    settler: Settler
    _forced: set[str]
    _resynced: bool
    _src_cols: list[str]
    _dst_cols: list[str]
    _src_types: list[str]
    _dst_keys: list[str]
    _src_key_types: list[str]
    _a_to_src: dict[str, str]

    async def _settle(self, batch_id: uuid.UUID, changes: Sequence[Change],
                      found: list[SinkState], settled: Settled) -> TwoWayBatch:
        """Decide each change against the SQL Server row and base read under lock (the
        transaction stays open meanwhile); conflicts go to the hub before the commit."""
        present = [f.row for f in found if f.row is not None]
        images = iter(await self.pg_rows.read(self.source, [self._as_source(r) for r in present]))
        ups: list[dict[str, Any]] = []
        dels: list[dict[str, Any]] = []
        merged: list[tuple[Change, conflicts.Image]] = []
        entries: list[str] = []
        for ch, st in zip(changes, found, strict=True):
            sink = next(images)[0] if st.row is not None else None
            # before the link's first resync recorded the bases, a key without one is
            # unknown (as a row install found differing on a Postgres link)
            known = st.known and (st.based or self._resynced)
            c = Candidate(ch.ka, ch.source_key, ch.image, sink, st.base, known,
                          ch.source_key in self._forced)
            v = await self.settler.verdict(c, settled.problems)
            if v is None:
                continue
            if v.conflict:
                entries.append(self.settler.entry(c, v))
            if v.action == conflicts.APPLY:
                (dels if ch.delete else ups).append(ch.values)
            if v.action in (conflicts.APPLY, conflicts.SKIP):
                settled.states.append((ch.ka, ch.image))
            elif v.action in (conflicts.KEEP_SINK, conflicts.MERGE):
                settled.resend.append(convert.pg_object(
                    self._dst_keys, [ch.key[k] for k in self._dst_keys], self._src_key_types))
            if v.action == conflicts.MERGE:
                merged.append((ch, v.row))
        await self._merged(merged, ups, dels, settled)
        if entries:
            await resolutions.record(self.hub, self.link.name,
                                   self.link.conflict, batch_id, convert.json_array(entries))
        return TwoWayBatch(ups, dels, settled.states, settled.resend)

    async def _merged(self, merged: list[tuple[Change, conflicts.Image]],
                      ups: list[dict[str, Any]], dels: list[dict[str, Any]],
                      settled: Settled) -> None:
        """Merged (or resolver's) rows, texts named as on side a, as sink values: read
        through the source table's types, so they travel like any source row."""
        rows = [(ch, row) for ch, row in merged if row is not None]
        dels += [ch.key for ch, row in merged if row is None]
        settled.states += [(ch.ka, None) for ch, row in merged if row is None]
        payloads = [json.dumps({self._a_to_src[c]: v for c, v in row.items()},
                               ensure_ascii=False) for _, row in rows]
        for (ch, _), (image, typed) in zip(rows, await self.pg_rows.read(self.source, payloads),
                                           strict=True):
            ups.append({d: typed[s] for s, d in zip(self._src_cols, self._dst_cols, strict=True)})
            settled.states.append((ch.ka, image))

    async def write_settled(self, row: conflicts.Image, sink_key: str) -> None:
        """Write a settled merge (an operator's choice) on this drain's SQL Server sink, as
        the bridge's own write (its context); the caller then re-sends that side's row."""
        dst_table = self.shape.table(self.dst)
        key = {k: convert.for_mssql(v, dst_table.columns[k].type)
               for k, v in convert.loads(sink_key).items()}
        ups: list[dict[str, Any]] = []
        if row is not None:
            payload = json.dumps({self._a_to_src[c]: v for c, v in row.items()},
                                 ensure_ascii=False)
            [(_, typed)] = await self.pg_rows.read(self.source, [payload])
            ups = [{d: typed[s] for s, d in zip(self._src_cols, self._dst_cols, strict=True)}]
        await self.mssql.apply_batch(self.shape, self.dst, uuid.uuid4(), ups,
                                     [] if ups else [key], self.ctx, signals=0)

    def _as_source(self, row: dict[str, Any]) -> str:
        """A SQL Server sink row as JSON in the source's names, for pg_rows."""
        return convert.pg_object(self._src_cols, [row[d] for d in self._dst_cols],
                                 self._src_types)
