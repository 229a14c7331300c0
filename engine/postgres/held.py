"""A batch held at a Postgres source (engine/postgres/drain.py has the protocol).

The signals of a batch into a Postgres sink are deleted by `take` in a source
transaction that stays open until the sink committed the rows and the batch's
record, whose `queue_ids` name those signals. `Held` is that transaction;
`HeldRecovery` is what a drain does after a crash or a failed attempt: the
sink's records whose signals are still queued were applied, so only their
signals are taken and their follow-ups replayed from the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from syncbridge.engine import errors, sqlfiles
from syncbridge.engine.config import Link
from syncbridge.engine.contract import BatchRecord, Item, json_array, json_object
from syncbridge.engine.postgres.staged import Rows

SQL = sqlfiles.Queries("postgres/queue.sql")
log = logging.getLogger("syncbridge.drain")
# seconds: a take without a floor at least this often (Floor); the tests set it high
# to show that no signal depends on it but the ones Floor says
FULL_EVERY = float(os.environ.get("SYNCBRIDGE_FULL_TAKE_EVERY", "1.0"))


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


@dataclass
class Taken:
    """What a batch's signals say, read in one pass: a catch-up batch holds thousands,
    and a pass per question cost more than the rest of the batch's Python."""

    keys: dict[str, int] = field(default_factory=dict)  # distinct K/R keys -> most attempts
    forced: set[str] = field(default_factory=set)  # keys of R signals (sync.resync)
    canaries: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    truncate: bool = False

    @classmethod
    def of(cls, signals: list) -> Taken:
        t = cls()
        keys = t.keys
        for s in signals:  # by position: id, op, key, attempts
            op, key = s[1], s[2]
            t.ids.append(s[0])
            if op == "K" or op == "R":
                if s[3] >= keys.get(key, 0):
                    keys[key] = s[3]
                if op == "R":
                    t.forced.add(key)
            elif op == "C":
                t.canaries.append(key)
            elif op == "T":
                t.truncate = True
        return t

    @property
    def changes(self) -> int:
        """Signals that are traffic (canaries are not)."""
        return len(self.ids) - len(self.canaries)


@dataclass
class Floor:
    """The queue id at and below which a drain's takes need not look. The queue's index
    keeps the entries of deleted signals until VACUUM, and a take that starts at the
    lowest id walks all of them: after a backlog of 200,000 signals about 2 ms a take,
    which doubled the latency of the changes that followed.

    Why no signal is left behind. A take returns, in id order, every visible, unlocked,
    due signal above the floor up to its highest id `top`. A signal with a lower id that
    it did not see was written by a transaction still running at its snapshot: the
    capture trigger's insert comes after the row write that gave that transaction its
    xid, so the xid is below the snapshot's xmax. Once a later take's snapshot has an
    xmin at or above that xmax, all those transactions have ended and that later take
    saw what they wrote; the floor then rises to `top`, but never above the highest id
    the later take itself covered. What this cannot vouch for (a signal deferred to a
    later retry_at, one skipped while another session locked it, a queue insert that is
    its transaction's first write) is found by a take without a floor, at least every
    FULL_EVERY seconds; and a batch given back (its signals queued again) resets it."""

    floor: int = 0
    pending: deque[tuple[int, int]] = field(default_factory=deque)  # (top, snapshot xmax)
    full_at: float = 0.0  # monotonic time of the next take without a floor

    def next(self) -> int:
        """The floor for the next take (0: look at every id)."""
        now = time.monotonic()
        if now >= self.full_at:
            self.full_at = now + FULL_EVERY
            return 0
        return self.floor

    def took(self, top: int, xmin: int, xmax: int) -> None:
        """A take returned signals up to id `top` under a snapshot of these bounds."""
        reach = self.floor
        while self.pending and self.pending[0][1] <= xmin:
            reach = max(reach, self.pending.popleft()[0])
        self.floor = max(self.floor, min(reach, top))
        self.pending.append((top, xmax))

    def reset(self) -> None:
        self.floor, self.full_at = 0, 0.0
        self.pending.clear()


class Held:
    """A batch taken at the source: its signals deleted in a transaction that is still
    open on `conn`, and the current source rows for their keys."""

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        self.pool, self.conn = pool, conn
        self.signals: list = []
        self.taken = Taken()
        self.upserts: list[Item] = []
        self.deletes: list[Item] = []
        self.staged: Rows | None = None  # a large one-way batch's rows as COPY text
        # its sink commit does not wait for its flush (drain.py: one-way links); its source
        # commit then waits for sink_flush
        self.unflushed = False
        self.batch_id = uuid.uuid4()

    async def commit(self) -> None:
        try:
            await self.conn.execute("commit")
        finally:
            await self.release()

    async def release(self) -> None:
        """Give the connection back; a transaction still open is rolled back first, so
        the signals are queued again (asyncpg's own reset would too, but logs every such
        release as an error). A connection that cannot roll back is closed by the pool.
        One whose session the server ended was already given back by asyncpg itself: any
        call on it raises InterfaceError (one of DATABASE_ERRORS), which would otherwise
        hide the failure the drain reports, and the pool's release of it does nothing."""
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                with contextlib.suppress(*errors.DATABASE_ERRORS):
                    if conn.is_in_transaction():
                        await conn.execute("rollback")
            finally:
                await self.pool.release(conn)


async def drop_ahead(ahead: asyncio.Future) -> None:
    """A batch taken ahead that will not be applied: its transaction is rolled back."""
    if not ahead.done():
        ahead.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        held = await ahead
        if held is not None:
            await held.release()


class HeldRecovery:
    """Recovery of a drain whose batches are held (PgDrain's base class)."""

    link: Link
    src: str
    name: str
    source: asyncpg.Pool
    sink: asyncpg.Pool
    gate: asyncio.Semaphore

    async def _finish(self, conn: asyncpg.Connection, batch_id: uuid.UUID, record: BatchRecord,
                      signals: list) -> None:
        raise NotImplementedError

    async def _sink_flush(self, conn: asyncpg.Connection) -> None:
        raise NotImplementedError

    async def recover(self) -> int:
        """Replay the follow-ups of batches the sink applied whose source commit was
        lost (their signals are still queued), then of batches an older bridge marked."""
        async with self.gate:
            n = await self._recover_marked()
            floor = await self.source.fetchval(SQL["queue_floor"], self.link.name, self.src)
            records = [] if floor is None else await self._held_records(floor)
            if records:
                pending = await self.source.fetch(SQL["still_queued"], self.link.name, self.src,
                                                  [r["queue_ids"] for r in records])
                for (i,) in pending:  # in the order they were applied
                    r = records[i - 1]
                    n += await self._replay(SQL["take_ids"], r["queue_ids"], r)
        if n:
            log.info("event=recovered link=%s batches=%d", self.name, n)
        return n

    async def _held_records(self, floor: int) -> list:
        """The sink's records of batches whose signals may still be queued. A batch's sink
        commit may not be flushed yet (drain.py: pipelined links): a record is acted on
        only once the sink's flush covers it, on the connection that read it (a sink
        restart since closed it), so a sink crash cannot take back a batch whose signals
        recovery deleted."""
        async with self.sink.acquire() as conn:
            records = await conn.fetch(SQL["held_records"], self.link.name, self.src, floor)
            if records:
                await self._sink_flush(conn)
        return records

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
