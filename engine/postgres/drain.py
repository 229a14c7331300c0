"""One (link, direction) of the pipeline: take signals, read current rows, apply.

Between Postgres peers a batch is held, not marked (the issue-16 design):
1. take: in a source transaction, delete the oldest visible signals
   (`for update skip locked`) and read the current source rows for their keys;
   the transaction stays open;
2. apply the rows to the sink and record the batch there, with the queue ids of
   its signals, in one sink transaction;
3. in the held source transaction: the batch's follow-ups (deferred keys queued
   again, last-synced row images), then commit.
A crash before 3 rolls the source back: the signals are queued again. Recovery
asks the sink for records whose ids are still queued: those batches were
applied, so only their signals are taken and their follow-ups replayed from the
record, in one source transaction. So no batch is applied twice and no signal
is lost; a signal costs the source one insert and one delete, no claim update.
While a batch applies, the next one is taken and read (a burst of back-to-back
batches, BURST seconds at most), so the source and the sink work at once; the
batches still apply, and commit at the source, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
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
BURST = 0.5  # seconds of back-to-back batches in one drain_once, each taken while the last applies
GROW_MAX = 8  # in a burst, batches double up to this many times the link's batch_size


def id_ranges(ids: list[int]) -> str:
    """The queue ids of a batch as an int8multirange literal (runs of ids stay one range)."""
    ids = sorted(ids)
    runs, start, prev = [], ids[0], ids[0]
    for i in ids[1:]:
        if i != prev + 1:
            runs.append(f"[{start},{prev + 1})")
            start = i
        prev = i
    runs.append(f"[{start},{prev + 1})")
    return "{" + ",".join(runs) + "}"


def signals_json(signals: list) -> str:
    """The key signals (op K or R) of a batch as JSON, for requeueing deferred keys."""
    return json_array([json_object(op=json.dumps(s["op"]), key=s["key"],
                                   attempts=str(s["attempts"]))
                       for s in signals if s["op"] in ("K", "R")])


class Held:
    """A batch taken at the source: its signals deleted in a transaction that is still
    open on `conn`, and the current source rows for their keys."""

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection, signals: list,
                 upserts: list[Item], deletes: list[Item]) -> None:
        self.pool, self.conn, self.signals = pool, conn, signals
        self.upserts, self.deletes = upserts, deletes
        self.batch_id = uuid.uuid4()

    async def commit(self) -> None:
        try:
            await self.conn.execute("commit")
        finally:
            await self.release()

    async def release(self) -> None:
        """Give the connection back; a transaction still open is rolled back (the
        pool's reset), so the signals are queued again."""
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await self.pool.release(conn)


async def _drop(ahead: asyncio.Future) -> None:
    """A batch taken ahead that will not be applied: its transaction is rolled back."""
    if not ahead.done():
        ahead.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        held = await ahead
        if held is not None:
            await held.release()


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
    its name and the queue depth for sync.status. Recovery here is of batches
    marked with a batch id (the SQL Server sink's claim): each subclass decides in
    `_resume` whether its sink has the batch. PgDrain holds its batches instead and
    recovers them its own way.
    A QueueDrain is a contract.Drain."""

    link: Link
    src: str
    dst: str
    source: asyncpg.Pool
    open_dead_letters: bool = True  # refreshed by the stats task; True = check
    poll_interval: float | None = None  # woken by the source's NOTIFY
    claim_limit: int | None = None  # set by the drain loop under a rate limit: smaller batches
    more: bool = True  # drained again at once after a batch (PgDrain: only after a full one)

    @property
    def name(self) -> str:
        return f"{self.link.name}:{self.src}->{self.dst}"

    @property
    def queue_peer(self) -> str | None:
        return self.link.side(self.src).peer

    async def send_canary(self) -> Any:
        return None  # only Postgres-to-Postgres directions carry canaries

    async def flush(self) -> None:
        return None  # counts are written in the batch's path

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
        hub: asyncpg.Pool, max_attempts: int = 8, gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.shape = shape
        self.link = shape.link
        self.src = source_side
        self.dst = "b" if source_side == "a" else "a"
        self.source, self.sink, self.hub = source, sink, hub
        # held batches of every drain of a bridge at once (each holds a source connection
        # while it waits for a sink one): the pools are sized for this many, so drains of
        # opposite directions never wait on each other's connections
        self.gate = gate or asyncio.Semaphore(1)
        self.tally = report.Tally(hub, self.link.name, self.src)
        self.sql = pg_sql.render(shape, self.src, self.dst)
        self.origin = capture.origin_tag(self.link, self.src)
        self.two_way = self.link.direction == "both"
        self.max_attempts = max_attempts
        # an image named as on side a -> the sink's column names (merged rows)
        self.to_sink = {ca: (ca if self.dst == "a" else cb) for ca, cb in shape.pairs}
        self.resolver = resolutions.resolver_sql(self.link.conflict)
        sink_table = pg_sql.table_name(shape, self.dst)
        self.sink_table = sink_table.as_string(None)
        self.source_table = pg_sql.table_name(shape, self.src).as_string(None)
        self.truncate_table = pg_sql.APPLY.render("truncate_table", table=sink_table)

    def check_shape(self, side: str, shape: str | None) -> None:
        """Raise SchemaChanged when a linked table's shape (sync.table_shape, as read in
        the batch's transaction on that side) differs from the validated one."""
        s = self.link.side(side)
        detail = shape_change(expected_shape(self.shape.table(side)), json.loads(shape or "[]"))
        if detail:
            raise SchemaChanged(self.link.name, s.peer, s.qualified, detail)

    async def recover(self) -> int:
        """Replay the follow-ups of batches the sink applied whose source commit was
        lost (their signals are still queued), then of batches an older bridge marked."""
        async with self.gate:
            n = await self._recover_marked()
            floor = await self.source.fetchval(SQL["queue_floor"], self.link.name, self.src)
            if floor is not None:
                records = await self.sink.fetch(SQL["held_records"], self.link.name, self.src,
                                                floor)
                pending = await self.source.fetch(SQL["still_queued"], self.link.name, self.src,
                                                  [r["queue_ids"] for r in records])
                for (i,) in pending:  # in the order they were applied
                    r = records[i - 1]
                    n += await self._replay(SQL["take_ids"], r["queue_ids"], r)
        if n:
            log.info("event=recovered link=%s batches=%d", self.name, n)
        return n

    async def _recover_marked(self) -> int:
        """Batches a bridge before the held design claimed by batch id: finished from the
        sink's record when it has one, else given back to be taken again."""
        n = 0
        for row in await self.source.fetch(SQL["pending_batches"], self.link.name, self.src):
            record = await self.sink.fetchrow(SQL["batch_record"], row["batch_id"])
            if record is None:
                await self.source.execute(SQL["release_batch"], row["batch_id"])
            else:
                n += await self._replay(SQL["legacy_batch_signals"], row["batch_id"], record,
                                        numbered=False)
        return n

    async def _replay(self, take: str, which: Any, record: Any, numbered: bool = True) -> int:
        """Take an applied batch's signals still queued and replay its follow-ups, in one
        source transaction (1), or find it finished (0). A batch still held by a dead
        session's transaction is waited for: it either commits (nothing left) or not."""
        async with self.source.acquire() as conn, conn.transaction():
            args = (self.link.name, self.src, which) if numbered else (which,)
            signals = await conn.fetch(take, *args)
            if not signals:
                return 0
            batch_id = record["batch_id"] if numbered else which
            await self._finish(conn, batch_id, BatchRecord.from_row(record), signals)
        return 1

    async def drain_once(self) -> int:
        """Apply a burst of batches; returns the number of changes they consumed (0 =
        idle: a batch of canaries only is not traffic, so it leaves the direction quiet).
        Under a rate limit (claim_limit) one batch, so the loop paces every batch."""
        base = limit = min(self.link.batch_size, self.claim_limit or self.link.batch_size)
        n = 0
        async with self.gate:
            deadline = time.monotonic() + BURST
            held = await self._take(limit)
            self.more = False
            while held is not None:
                ahead = None
                full = len(held.signals) >= limit
                if full and self.claim_limit is None and time.monotonic() < deadline:
                    # a backlog: batches grow, so a catch-up pays fewer commits per row
                    limit = min(limit * 2, base * GROW_MAX)
                    ahead = asyncio.ensure_future(self._take(limit))
                try:
                    await self._apply_and_finish(held)
                except BaseException:
                    await held.release()
                    if ahead is not None:
                        await _drop(ahead)
                    raise
                n += sum(s["op"] != "C" for s in held.signals)
                self.more = full
                held = await ahead if ahead is not None else None
        return n

    async def flush(self) -> None:
        await self.tally.flush()

    async def _take(self, limit: int) -> Held | None:
        """Take the next batch at the source and read its rows (the transaction stays open)."""
        conn = await self.source.acquire()
        held = Held(self.source, conn, [], [], [])
        try:
            await conn.execute(SQL["hold"])
            held.signals = await conn.fetch(SQL["take"], self.link.name, self.src, limit,
                                            self.source_table)
            if not held.signals:  # nothing taken: committing and rolling back are the same
                await held.commit()
                return None
            self.check_shape(self.src, next(s["shape"] for s in held.signals if s["shape"]))
            faults.hit("after_claim")
            held.upserts, held.deletes = await self._read(conn, held.signals)
        except BaseException:
            await held.release()
            raise
        return held

    async def _apply_and_finish(self, held: Held) -> None:
        signals = held.signals
        upserts, deletes = held.upserts, held.deletes
        truncate = any(s["op"] == "T" for s in signals)
        forced = {s["key"] for s in signals if s["op"] == "R"}
        canaries = [s["key"] for s in signals if s["op"] == "C"]
        canary = None
        out = Outcome()
        async with self.sink.acquire() as conn, conn.transaction():
            begun = await conn.fetchrow(SQL["sink_begin"], self.origin, self.sink_table)
            self.check_shape(self.dst, begun[1])
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
            recorded = await conn.execute(
                SQL["record_batch"], held.batch_id, self.link.name, self.src, len(signals),
                out.upserts, out.deletes, record.problems, record.synced, record.conflicts,
                truncate, id_ranges([s["id"] for s in signals]),
            )
            if recorded.split()[-1] == "0":  # the sink transaction rolls back: nothing applied
                raise errors.AlreadyApplied(f"{self.name}: signals of batch {held.batch_id} "
                                            "were applied before; recovering that batch first")
        faults.hit("after_sink_commit")
        await self._finish(held.conn, held.batch_id, record, signals)
        await held.commit()
        self.tally.add(out.upserts + out.deletes, out.deferred)
        if self.open_dead_letters and out.applied:
            await dead_letters.close(self.hub, self.link.name, self.src,
                                     [i.source_key for i in out.applied])
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

    async def _read(self, conn: asyncpg.Connection, signals: list
                    ) -> tuple[list[Item], list[Item]]:
        """Current source rows for the batch's distinct keys: upserts and deletes."""
        attempts: dict[str, int] = {}
        for s in signals:
            if s["op"] in ("K", "R"):
                attempts[s["key"]] = max(attempts.get(s["key"], 0), s["attempts"])
        if not attempts:
            return [], []
        rows = await conn.fetch(self.sql.read_rows, json_array(list(attempts)))
        upserts: dict[str, Item] = {}  # by the row's own key: one item per sink row
        deletes = []
        worst = max(attempts.values())  # once: a default argument is evaluated every call
        for skey, key, ka, row, img in ((r["skey"], r["key"], r["ka"] or r["key"], r["row"],
                                         r["img"]) for r in rows):
            tries = attempts.get(skey, worst)
            if row is None:
                deletes.append(Item(skey, key, ka, key, None, tries))
            else:
                upserts.setdefault(key, Item(skey, key, ka, row, img, tries))
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

    async def _finish(self, conn: asyncpg.Connection, batch_id: uuid.UUID, record: BatchRecord,
                      signals: list) -> None:
        """Source follow-ups after the sink committed, in the source transaction that takes
        the batch's signals: replayable from the sink's record."""
        if record.has_problems:
            await dead_letters.write(self.hub, self.link.name, self.src, record.problems)
        if record.conflicts != "[]":
            await resolutions.record(self.hub, self.link.name, self.link.conflict, batch_id,
                                     record.conflicts)
        if record.has_problems:
            await conn.execute(SQL["requeue"], self.link.name, self.src, signals_json(signals),
                               record.problems, 1.0)
        if self.two_way and record.truncated:
            await conn.execute(SQL["forget_state"], self.link.name)
        if self.two_way and record.synced != "[]":
            await conn.execute(SQL["state_write"], self.link.name, record.synced)
