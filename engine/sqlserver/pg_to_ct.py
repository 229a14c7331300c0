"""Postgres source -> SQL Server sink: sync.queue in, one SQL Server batch out.

Claim signals in the Postgres `sync.queue` exactly as PgDrain does, read the
current source rows as typed values (asyncpg's Decimal, datetime, bytes ...
never through a float), and apply them with `MssqlPeer.apply_batch`: one SQL
Server transaction holding the rows and the `[sync].[applied_batches]` record,
tagged WITH CHANGE_TRACKING_CONTEXT so this link's change-tracking reader skips
them. Then delete the claimed signals. Recovery asks SQL Server whether a
claimed batch id is recorded: yes = only the source cleanup is left, no = apply
it now.

A SQL Server batch cannot be partly undone, so when a batch hits a row error its
halves are applied as sub-batches (fresh ids, each its own transaction) and the
claimed batch's own record is written last, after its problems were parked;
re-applying current rows after a crash in between is harmless. Foreign-key
misses are re-queued at the source with backoff before they are dead.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from psycopg import sql

from syncbridge.engine import errors, faults, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.contract import Outcome, isolate, problem
from syncbridge.engine.hub import dead_letters, report
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.postgres.drain import QueueDrain
from syncbridge.engine.sqlserver import convert
from syncbridge.engine.sqlserver.capture import echo_context
from syncbridge.engine.sqlserver.peer import MssqlPeer
from syncbridge.engine.sqlserver.pg_settle import Change, Settled, SqlServerSinkSettle
from syncbridge.engine.sqlserver.two_way import PgRows, Settler, state_entry

log = logging.getLogger("syncbridge.mssql_drain")
SQL = sqlfiles.Queries("queries/mssql_bridge.sql")
QUEUE = sqlfiles.Queries("postgres/queue.sql")  # the queue statements PgDrain uses too

PAGE_ROWS = 1000  # keys per keyset page of a truncate sweep
DEFER_BASE = 1.0  # seconds; first delay of a re-queued foreign-key miss (doubles, max 60)
APPLIED_KEEP_DAYS = 7  # [sync].[applied_batches] records kept (recovery needs minutes)
PRUNE_EVERY = 3600.0  # seconds between prunes of [sync].[applied_batches]


def row_error(exc: BaseException) -> bool:
    """True when SQL Server rejected the batch because of one row's data (or a value
    could not travel at all: BadRow, ValueError)."""
    return isinstance(exc, ValueError) or errors.is_odbc_row_error(exc)


def _typed_read(shape: LinkShape, source: str) -> str:
    """$1 jsonb keys (source names) -> skey text, present, the key columns, every linked
    column: typed, so numeric, timestamps and bytea reach Python exactly (asyncpg)."""
    keys, cols = shape.key_cols(source), shape.cols(source)
    s = shape.link.side(source)
    return SQL.render(
        "typed_read",
        table=(s.schema, s.table),
        skey=pg_sql.typed_obj(keys, "k", keys),
        first_key=sql.Identifier("t", keys[0]),
        key_list=sql.SQL(", ").join(
            sql.SQL("{} as {}").format(sql.Identifier("k", k), sql.Identifier(f"k{i}"))
            for i, k in enumerate(keys)),
        col_list=sql.SQL(", ").join(
            sql.SQL("{} as {}").format(sql.Identifier("t", c), sql.Identifier(f"c{i}"))
            for i, c in enumerate(cols)),
        defs=pg_sql.key_defs(shape, source),
        join=sql.SQL(" and ").join(
            sql.SQL("{} = {}").format(sql.Identifier("t", k), sql.Identifier("k", k))
            for k in keys),
        ka=sql.SQL("case when {} is null then {} else {} end").format(
            sql.Identifier("t", keys[0]),
            pg_sql.typed_obj(shape.key_cols("a"), "k", keys),
            pg_sql.typed_obj(shape.key_cols("a"), "t", keys)),
        img=sql.SQL("case when {} is null then null else {} end").format(
            sql.Identifier("t", keys[0]), pg_sql.text_obj(shape.cols("a"), "t", cols)),
    )


class PgToCtDrain(SqlServerSinkSettle, QueueDrain):
    """Moves one link's changes from a Postgres side (sync.queue) to a SQL Server side."""

    def __init__(self, shape: LinkShape, source_side: str, source: asyncpg.Pool,
                 mssql: MssqlPeer, hub: asyncpg.Pool, max_attempts: int = 8,
                 page_rows: int = PAGE_ROWS) -> None:
        self.shape = shape
        self.link = shape.link
        self.src = source_side
        self.dst = "b" if source_side == "a" else "a"
        self.source, self.mssql, self.hub = source, mssql, hub
        self.read_sql = _typed_read(shape, self.src)
        self.ctx = echo_context(self.link.name)
        self.max_attempts = max_attempts
        self.page_rows = page_rows
        self.open_dead_letters = True
        self._src_keys, self._dst_keys = shape.key_cols(self.src), shape.key_cols(self.dst)
        self._dst_cols = shape.cols(self.dst)
        src_table, dst_table = shape.table(self.src), shape.table(self.dst)
        self._src_key_types = [src_table.columns[k].type for k in self._src_keys]
        self._dst_types = {c: dst_table.columns[c].type for c in self._dst_cols}
        self._meta = False
        self._inflight: uuid.UUID | None = None
        self._pruned_at: float | None = None
        # two-way links: conflict checks against the SQL Server sink's bases
        self.two_way = self.link.direction == "both"
        self._src_cols = shape.cols(self.src)
        self._src_types = [src_table.columns[c].type for c in self._src_cols]
        self._a_to_src = {a: (a if self.src == "a" else b) for a, b in shape.pairs}
        self.pg_rows = PgRows(shape, self.src)
        self.settler = Settler(self.link, self.src, hub, self.name)
        self._forced: set[str] = set()  # source keys of op R signals: applied unchecked
        self._synced: list[tuple[str, str | None]] = []  # bases to copy to the source
        self._resynced = False  # the SQL Server side's first resync is done (bases recorded)

    async def _load_meta(self) -> None:
        """Readiness of the sink (SqlServerError with the fix otherwise), then collations
        and IDENTITY columns of the sink table, which apply_batch needs."""
        if not self._meta:
            for f in await self.mssql.ensure_ready(self.link.side(self.dst),
                                                   source=self.link.direction == "both",
                                                   sink=True, retention_days=0):
                log.warning("event=sqlserver_warning link=%s detail=%s fix=%s", self.name,
                            json.dumps(f.what), json.dumps(f.fix))
            self._meta = True
        now = time.monotonic()
        if self._pruned_at is None or now - self._pruned_at > PRUNE_EVERY:
            self._pruned_at = now
            await self.mssql.prune_applied(APPLIED_KEEP_DAYS)

    async def recover(self) -> int:
        await self._load_meta()
        return await super().recover()

    async def _resume(self, batch_id: uuid.UUID) -> None:
        if await self.mssql.applied(batch_id):
            # recorded with its rows before the crash: only the source cleanup is left
            await self._finish(batch_id, Outcome(), count=False)
            return
        signals = await self.source.fetch(QUEUE["batch_signals"], batch_id)
        if signals:
            await self._apply_and_finish(batch_id, signals)

    async def drain_once(self) -> int:
        """Apply one batch; returns the number of signals it consumed (0 = idle)."""
        await self._load_meta()
        if self._inflight is not None:  # an earlier try stopped midway (e.g. connection lost)
            await self._resume(self._inflight)
            self._inflight = None
        batch_id = uuid.uuid4()
        signals = await self.source.fetch(
            QUEUE["claim"], self.link.name, self.src, self.link.batch_size, batch_id
        )
        if signals:
            self._inflight = batch_id
            faults.hit("after_claim")
            await self._apply_and_finish(batch_id, signals)
            self._inflight = None
        return len(signals)

    async def _read(self, signals: Sequence[Any]) -> list[Change]:
        """Current source rows for the batch's distinct keys, typed, in sink names."""
        attempts: dict[str, int] = {}
        for s in signals:
            if s["op"] in ("K", "R"):
                attempts[s["key"]] = max(attempts.get(s["key"], 0), s["attempts"])
        if not attempts:
            return []
        rows = await self.source.fetch(self.read_sql, convert.json_array(list(attempts)))
        nk, nc = len(self._src_keys), len(self._dst_cols)
        out = []
        worst = max(attempts.values())  # once: a default argument is evaluated every call
        for r in rows:
            tries = attempts.get(r["skey"], worst)
            found = list(r.values())
            keys = dict(zip(self._dst_keys, found[2: 2 + nk], strict=True))
            if r["present"]:
                values = dict(zip(self._dst_cols, found[2 + nk: 2 + nk + nc], strict=True))
                keys = {k: values[k] for k in self._dst_keys}
                out.append(Change(r["skey"], values, False, tries, r["ka"], r["img"], keys))
            else:
                out.append(Change(r["skey"], keys, True, tries, r["ka"], None, keys))
        return out

    def _check(self, ch: Change) -> None:
        """Raise ValueError now for a value SQL Server cannot take (as apply_batch would)."""
        for c, v in ch.values.items():
            convert.to_transport(v, self._dst_types[c])

    def _problem(self, ch: Change, exc: BaseException) -> str:
        defer = errors.is_mssql_fk_miss(exc) and ch.attempts < self.max_attempts
        entry = problem(self.name, ch.source_key, exc, defer).json()
        return entry[:-1] + f',"attempts":{ch.attempts}}}'

    async def _send(self, batch_id: uuid.UUID, changes: Sequence[Change], signals: int) -> int:
        if not self.two_way:
            counts = await self.mssql.apply_batch(
                self.shape, self.dst, batch_id, [c.values for c in changes if not c.delete],
                [c.values for c in changes if c.delete], self.ctx, signals=signals)
            return counts.updated + counts.inserted + counts.deleted
        settled = Settled()
        if not self._resynced:  # the other direction's cursor is stored here, at its sink
            self._resynced = await self.source.fetchrow(
                SQL["ct_cursor_read"], self.link.name, self.dst) is not None
        counts = await self.mssql.apply_two_way(
            self.shape, self.dst, batch_id, [(c.ka, c.key) for c in changes],
            lambda found: self._settle(batch_id, changes, found, settled), self.ctx,
            signals=signals)
        # committed: the source's copy of the bases follows in _finish (as PgDrain's)
        self._synced += settled.states
        if settled.problems:
            await self._park([p.json() for p in settled.problems])
        return counts.updated + counts.inserted + counts.deleted

    async def _park(self, problems: list[str]) -> None:
        """Dead letters to the hub, foreign-key misses back to the source queue (later).
        Always before the batch's own record: a crash can repeat this, never lose it."""
        entries = convert.json_array(problems)
        await dead_letters.write(self.hub, self.link.name, self.src, entries)
        await self.source.execute(SQL["requeue_keys"], self.link.name, self.src, entries,
                                  DEFER_BASE)

    async def _apply_and_finish(self, batch_id: uuid.UUID, signals: Sequence[Any]) -> None:
        if any(s["op"] == "T" for s in signals):
            await self._sweep_sink()
        self._forced = {s["key"] for s in signals if s["op"] == "R"}
        self._synced = []
        changes = await self._read(signals)
        out = Outcome()
        sendable, unsendable = [], []
        for ch in changes:
            try:
                self._check(ch)
            except ValueError as e:
                unsendable.append(self._problem(ch, e))
            else:
                sendable.append(ch)
        if unsendable:
            await self._park(unsendable)
        try:
            await self._send(batch_id, sendable, len(signals))
            applied = sendable
        except Exception as e:
            if not sendable or not row_error(e):
                raise
            # a row the sink rejects: apply the halves as sub-batches, record the batch last
            found: list[str] = []
            applied = []
            if len(sendable) == 1:
                found.append(self._problem(sendable[0], e))
            else:
                mid = len(sendable) // 2
                for half in (sendable[:mid], sendable[mid:]):
                    _, ok = await isolate(
                        half, lambda part: self._send(uuid.uuid4(), part, 0), row_error,
                        lambda ch, err: found.append(self._problem(ch, err)))
                    applied += ok
            if found:
                await self._park(found)
            await self._send(batch_id, [], len(signals))
        out.upserts = sum(1 for c in applied if not c.delete)
        out.deletes = sum(1 for c in applied if c.delete)
        faults.hit("after_sink_commit")
        await self._finish(batch_id, out, applied=[c.source_key for c in applied])

    async def _finish(self, batch_id: uuid.UUID, out: Outcome, count: bool = True,
                      applied: Sequence[str] = ()) -> None:
        async with self.source.acquire() as conn, conn.transaction():
            if self._synced:  # the source's copy of the bases the sink committed
                await conn.execute(QUEUE["state_write"], self.link.name, convert.json_array(
                    state_entry(ka, image) for ka, image in self._synced))
                self._synced = []
            await conn.execute(QUEUE["finish_batch"], batch_id)
        if count:
            await report.batch(self.hub, self.link.name, self.src,
                                   out.upserts + out.deletes, 0)
        if self.open_dead_letters and applied:
            await dead_letters.close(self.hub, self.link.name, self.src,
                                   list(applied))

    async def _sweep_sink(self) -> int:
        """TRUNCATE at the source: delete every sink key the source no longer has
        (keyset pages of the sink's keys, each checked against the source)."""
        deleted = 0
        after: dict[str, Any] | None = None
        while True:
            # on the writer: a sink-only database need not allow snapshot isolation
            page = await self.mssql.read_keys_page(self.shape, self.dst, after, self.page_rows,
                                                   sink=True)
            if not page:
                break
            keys = convert.json_array([
                convert.pg_object(self._src_keys, [k[d] for d in self._dst_keys],
                                  self._src_key_types) for k in page])
            rows = await self.source.fetch(self.read_sql, keys)
            nk = len(self._src_keys)
            gone = [dict(zip(self._dst_keys, list(r.values())[2: 2 + nk], strict=True))
                    for r in rows if not r["present"]]
            if gone:
                counts = await self.mssql.apply_batch(self.shape, self.dst, uuid.uuid4(), [],
                                                      gone, self.ctx, signals=0)
                deleted += counts.deleted
            after = page[-1]
            if len(page) < self.page_rows:
                break
        if self.two_way:  # both sides now lack these rows: no base describes them any more
            await self.mssql.execute("state_forget", self.link.name)
            await self.source.execute(QUEUE["forget_state"], self.link.name)
        log.info("event=truncate_swept link=%s deleted=%d", self.name, deleted)
        return deleted

