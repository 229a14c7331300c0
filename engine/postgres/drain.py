"""One (link, direction) of the pipeline: claim signals, read current rows, apply.

The order is what makes a crash harmless (PgQ's remote consumer):
1. claim: mark visible signals with a new batch id (committed at the source);
2. read the current source rows for their keys, apply them to the sink and
   record the batch id in the sink, all in one sink transaction;
3. at the source, in one transaction: the batch's follow-ups (deferred keys,
   last-synced row images) and the deletion of its signals.
A restart finds claimed batches and looks the id up in the sink: recorded
means only step 3 is left, replayed from the record; not recorded means the
batch is applied now. So no batch is ever applied twice and no signal is lost.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from syncbridge.engine import conflicts, errors, faults, sqlfiles
from syncbridge.engine.catalog import LinkShape, Table
from syncbridge.engine.config import Link
from syncbridge.engine.contract import (
    BatchRecord,
    Item,
    Outcome,
    RowProblem,
    SchemaChanged,
    isolate,
    json_array,
    json_object,
    problem,
)
from syncbridge.engine.hub import dead_letters, report, resolutions
from syncbridge.engine.postgres import capture
from syncbridge.engine.postgres import sql as pg_sql

SQL = sqlfiles.Queries("postgres/queue.sql")
log = logging.getLogger("syncbridge.drain")


def expected_shape(table: Table) -> list[list[Any]]:
    """What sync.table_shape() returns for a table as the catalog read it."""
    return [[c, col.type, c in table.pk] for c, col in table.columns.items()]


def shape_change(before: list[list[Any]], after: list[list[Any]]) -> str:
    """'column email added', 'column age type integer -> bigint', ... (empty: the same)."""
    old = {c: (t, k) for c, t, k in before}
    new = {c: (t, k) for c, t, k in after}
    out = [f"column {c} added" for c in new if c not in old]
    out += [f"column {c} dropped" for c in old if c not in new]
    out += [f"column {c} type {old[c][0]} -> {new[c][0]}" for c in old
            if c in new and old[c][0] != new[c][0]]
    if any(old[c][1] != new[c][1] for c in old if c in new):
        out.append("primary key changed")
    return ", ".join(out)


def _pg_row_error(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and errors.is_row_error(exc)


async def apply_set(conn: asyncpg.Connection, stmt: str, items: list[Item], out: Outcome,
                    problem_of: Callable[[Item, BaseException], RowProblem]) -> int:
    """One set-based Postgres statement over items' payloads, each try in a savepoint;
    rows the sink rejects go to out.problems (via problem_of), the rest to out.applied."""

    async def attempt(part: list[Item]) -> int:
        async with conn.transaction():  # a savepoint: a failure undoes only this part
            status = await conn.execute(stmt, json_array([i.payload for i in part]))
        return int(status.split()[-1])

    n, applied = await isolate(items, attempt, _pg_row_error,
                               lambda i, e: out.problems.append(problem_of(i, e)))
    out.applied.extend(applied)
    return n


class QueueDrain:
    """What every drain fed by a Postgres sync.queue shares, whatever its sink:
    its name, the queue depth for sync.status, and crash recovery of claimed
    batches (each subclass decides in `_resume` whether its sink has the batch).
    A QueueDrain is a contract.Drain."""

    link: Link
    src: str
    dst: str
    source: asyncpg.Pool
    open_dead_letters: bool = True  # refreshed by the stats task; True = check
    poll_interval: float | None = None  # woken by the source's NOTIFY
    claim_limit: int | None = None  # set by the drain loop under a rate limit: smaller batches

    @property
    def name(self) -> str:
        return f"{self.link.name}:{self.src}->{self.dst}"

    @property
    def queue_peer(self) -> str | None:
        return self.link.side(self.src).peer

    async def send_canary(self) -> Any:
        return None  # only Postgres-to-Postgres directions carry canaries

    async def write_settled(self, row: conflicts.Image, sink_key: str) -> None:
        raise NotImplementedError(f"{self.name}: a settled merge needs a Postgres sink")

    async def depth(self) -> tuple[int, Any]:
        row = await self.source.fetchrow(SQL["queue_depth"], self.link.name, self.src)
        return row["queued"], row["oldest"]

    async def recover(self) -> int:
        """Finish every batch a previous run claimed but did not finish."""
        pending = await self.source.fetch(SQL["pending_batches"], self.link.name, self.src)
        for row in pending:
            await self._resume(row["batch_id"])
        if pending:
            log.info("event=recovered link=%s batches=%d", self.name, len(pending))
        return len(pending)

    async def _resume(self, batch_id: uuid.UUID) -> None:
        raise NotImplementedError


class PgDrain(QueueDrain):
    """Moves one link's changes from a Postgres source side to a Postgres sink side."""

    def __init__(
        self, shape: LinkShape, source_side: str, source: asyncpg.Pool, sink: asyncpg.Pool,
        hub: asyncpg.Pool, max_attempts: int = 8,
    ) -> None:
        self.shape = shape
        self.link = shape.link
        self.src = source_side
        self.dst = "b" if source_side == "a" else "a"
        self.source, self.sink, self.hub = source, sink, hub
        self.sql = pg_sql.render(shape, self.src, self.dst)
        self.origin = capture.origin_tag(self.link, self.src)
        self.two_way = self.link.direction == "both"
        self.max_attempts = max_attempts
        # an image named as on side a -> the sink's column names (merged rows)
        self.to_sink = {ca: (ca if self.dst == "a" else cb) for ca, cb in shape.pairs}
        self.resolver = resolutions.resolver_sql(self.link.conflict)
        sink_table = pg_sql.table_name(shape, self.dst)
        self.sink_table = sink_table.as_string(None)
        self.truncate_table = pg_sql.APPLY.render("truncate_table", table=sink_table)

    async def check_shape(self) -> None:
        """Raise SchemaChanged when either linked table differs from the validated shape."""
        for side, pool in ((self.src, self.source), (self.dst, self.sink)):
            s = self.link.side(side)
            table = pg_sql.table_name(self.shape, side).as_string(None)
            now = json.loads(await pool.fetchval(SQL["table_shape"], table) or "[]")
            detail = shape_change(expected_shape(self.shape.table(side)), now)
            if detail:
                raise SchemaChanged(self.link.name, s.peer, s.qualified, detail)

    async def _resume(self, batch_id: uuid.UUID) -> None:
        signals = await self.source.fetch(SQL["batch_signals"], batch_id)
        row = await self.sink.fetchrow(SQL["batch_record"], batch_id)
        if row is None:
            await self._apply_and_finish(batch_id, signals)
            return
        # applied before the crash: only the source follow-ups are left
        await self._finish(batch_id, BatchRecord.from_row(row), Outcome(), count=False)

    async def drain_once(self) -> int:
        """Apply one batch; returns the number of changes it consumed (0 = idle: a
        batch of canaries only is not traffic, so it leaves the direction quiet)."""
        batch_id = uuid.uuid4()
        signals = await self.source.fetch(
            SQL["claim"], self.link.name, self.src,
            min(self.link.batch_size, self.claim_limit or self.link.batch_size), batch_id)
        if signals:
            try:
                await self.check_shape()
            except SchemaChanged:
                await self.source.execute(SQL["release_batch"], batch_id)
                raise
            faults.hit("after_claim")
            await self._apply_and_finish(batch_id, signals)
        return sum(s["op"] != "C" for s in signals)

    async def _apply_and_finish(self, batch_id: uuid.UUID, signals: list) -> None:
        upserts, deletes = await self._read(signals)
        truncate = any(s["op"] == "T" for s in signals)
        forced = {s["key"] for s in signals if s["op"] == "R"}
        canaries = [s["key"] for s in signals if s["op"] == "C"]
        canary = None
        out = Outcome()
        async with self.sink.acquire() as conn, conn.transaction():
            await conn.execute(SQL["set_origin"], self.origin)
            if canaries:  # end-to-end heartbeat: recorded with the batch, no user table
                canary = await conn.fetchrow(SQL["canary_applied"], self.link.name, self.src,
                                             json_array(canaries))
            if truncate:
                await conn.execute(await self._truncate_statement(conn))
                if self.two_way:
                    await conn.execute(SQL["forget_state"], self.link.name)
            if self.link.deletes == "ignore":  # an archive (one-way only): the sink keeps them
                deletes = []
            if self.two_way:
                upserts, deletes = await self._settle(conn, upserts, deletes, forced, out)
            # deletes first: a changed key frees unique values before the new row arrives
            out.deletes = await self._apply_set(conn, self.sql.delete, deletes, out)
            out.upserts = await self._apply_set(conn, self.sql.upsert, upserts, out)
            if self.two_way:
                await self._remember(conn, out)
            record = out.record(truncate)
            await conn.execute(
                SQL["record_batch"], batch_id, self.link.name, self.src, len(signals),
                out.upserts, out.deletes, record.problems, record.synced, record.conflicts,
                truncate,
            )
        faults.hit("after_sink_commit")
        await self._finish(batch_id, record, out)
        if canary is not None:
            await report.canary_arrived(self.hub, self.link.name, self.src, canary["sent_at"],
                                        canary["applied_at"])

    async def _truncate_statement(self, conn: asyncpg.Connection) -> str:
        """TRUNCATE where the sink's catalog allows it (sink_truncatable says when not),
        else DELETE. Read when a truncate is applied, in its transaction: a foreign key
        added while the bridge runs is seen, and truncates are rare."""
        if await conn.fetchval(SQL["sink_truncatable"], self.sink_table):
            return self.truncate_table
        return self.sql.truncate

    async def send_canary(self) -> Any:
        """Queue an end-to-end canary at the source; returns when it was sent."""
        return await self.source.fetchval(SQL["canary_send"], self.link.name, self.src)

    async def _read(self, signals: list) -> tuple[list[Item], list[Item]]:
        """Current source rows for the batch's distinct keys: upserts and deletes."""
        attempts: dict[str, int] = {}
        for s in signals:
            if s["op"] in ("K", "R"):
                attempts[s["key"]] = max(attempts.get(s["key"], 0), s["attempts"])
        if not attempts:
            return [], []
        rows = await self.source.fetch(self.sql.read_rows, json_array(list(attempts)))
        upserts: dict[str, Item] = {}  # by the row's own key: one item per sink row
        deletes = []
        worst = max(attempts.values())  # once: a default argument is evaluated every call
        for r in rows:
            skey = r["skey"]
            tries = attempts.get(skey, worst)
            if r["row"] is None:
                deletes.append(Item(skey, r["key"], r["ka"], r["key"], None, tries))
            else:
                upserts.setdefault(r["key"], Item(skey, r["key"], r["ka"], r["row"], r["img"],
                                                  tries))
        return list(upserts.values()), deletes

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

    async def _apply_set(self, conn: asyncpg.Connection, stmt: str, items: list[Item],
                         out: Outcome) -> int:
        """Apply items in one statement; on a row error, bisect to isolate the bad rows."""
        return await apply_set(conn, stmt, items, out, self._problem)

    def _problem(self, item: Item, exc: BaseException) -> RowProblem:
        return problem(self.name, item.source_key, exc,
                       defer=errors.sqlstate(exc) == errors.FK_VIOLATION
                       and item.attempts < self.max_attempts)

    async def _finish(self, batch_id: uuid.UUID, record: BatchRecord, out: Outcome,
                      count: bool = True) -> None:
        """Source follow-ups after the sink committed, replayable from the sink's record."""
        if record.has_problems:
            await dead_letters.write(self.hub, self.link.name, self.src, record.problems)
        if record.conflicts != "[]":
            await resolutions.record(self.hub, self.link.name, self.link.conflict, batch_id,
                                     record.conflicts)
        async with self.source.acquire() as conn, conn.transaction():
            if record.has_problems:
                await conn.execute(SQL["defer_keys"], batch_id, record.problems, 1.0)
            if self.two_way and record.truncated:
                await conn.execute(SQL["forget_state"], self.link.name)
            if self.two_way and record.synced != "[]":
                await conn.execute(SQL["state_write"], self.link.name, record.synced)
            await conn.execute(SQL["finish_batch"], batch_id)
        if count:
            await report.batch(self.hub, self.link.name, self.src, out.upserts + out.deletes,
                               out.deferred)
        if self.open_dead_letters and out.applied:
            await dead_letters.close(self.hub, self.link.name, self.src,
                                     [i.source_key for i in out.applied])
