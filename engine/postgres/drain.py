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
A one-way batch of staged.STAGE_FROM keys or more travels as one COPY stream
(staged.py); smaller ones, two-way ones and rows the sink rejects as jsonb items.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import asyncpg

from syncbridge.engine import conflicts, errors, faults, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Link
from syncbridge.engine.contract import (
    BatchRecord,
    Item,
    Outcome,
    RowProblem,
    SchemaChanged,
    json_array,
    problem,
)
from syncbridge.engine.hub import dead_letters, report, resolutions
from syncbridge.engine.postgres import capture, staged
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.postgres.held import (
    Floor,
    Held,
    HeldRecovery,
    Taken,
    drop_ahead,
    id_ranges,
    signals_json,
)
from syncbridge.engine.postgres.settle import Settling
from syncbridge.engine.postgres.sink import (
    Isolate,
    apply_set,
    expected_shape,
    row_error,
    shape_change,
)

SQL = sqlfiles.Queries("postgres/queue.sql")
TAKE = pg_sql.take()  # a take without its rows: when the source table changed under them
# signals below which a take reads its batch's rows too (take_rows): all of them go in
# one array value, so a batch of wide rows reads them apart, as a larger one does
TAKE_ROWS_BELOW = 100
log = logging.getLogger("syncbridge.drain")
BURST = 0.5  # seconds of back-to-back batches in one drain_once, each taken while the last applies
GROW_MAX = 8  # in a burst, batches double up to this many times the link's batch_size
GROW_BYTES = 16 << 20  # ... while a staged batch's rows are fewer bytes than this (wide rows)
ALREADY_APPLIED = "SB409"  # sync.apply_batch: an applied batch names one of the signals
FLUSH_WAIT = 30.0  # seconds a sink without sink_flush may take to flush a batch's commit
FLUSH_POLL = 0.02  # seconds between its flush position's looks


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


class PgDrain(HeldRecovery, Settling, QueueDrain):
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
        # keys from which a batch is staged (staged.py); None: items only (two-way settling
        # reads every row in Python, or the sink role may not create a staging table)
        self.stage_from: int | None = None if self.two_way else staged.STAGE_FROM
        self.direct = staged.Direct()  # when a staged batch goes straight into the sink table
        self.floor = Floor()  # the queue ids a take need not look at
        # a small one-way batch as one sink statement (sync.apply_batch); False once the
        # sink lacks the function (migrated before 0014)
        self.one_shot = not self.two_way
        self.flush_by_message = True  # False once the sink may not run sink_flush
        self.sink_shape = json.dumps(expected_shape(shape.table(self.dst)))
        self.max_attempts = max_attempts
        # an image named as on side a -> the sink's column names (merged rows)
        self.to_sink = {ca: (ca if self.dst == "a" else cb) for ca, cb in shape.pairs}
        self.resolver = resolutions.resolver_sql(self.link.conflict)
        sink_table = pg_sql.table_name(shape, self.dst)
        self.sink_table = sink_table.as_string(None)
        self.source_table = pg_sql.table_name(shape, self.src).as_string(None)
        self.truncate_table = pg_sql.APPLY.render("truncate_table", table=sink_table)

    @property
    def pipelined(self) -> bool:
        """Whether a batch applied while the next one is taken ahead commits at the sink
        without waiting for its flush (its source commit waits for sink_flush, in _commit,
        while the next batch applies). Two-way links commit in turn, synchronously: the
        other direction reads what the follow-ups write; so does a sink that may not run
        sink_flush."""
        return not self.two_way and self.flush_by_message

    def check_shape(self, side: str, shape: str | None) -> None:
        """Raise SchemaChanged when a linked table's shape (sync.table_shape, as read in
        the batch's transaction on that side) differs from the validated one."""
        s = self.link.side(side)
        detail = shape_change(expected_shape(self.shape.table(side)), json.loads(shape or "[]"))
        if detail:
            raise SchemaChanged(self.link.name, s.peer, s.qualified, detail)

    async def drain_once(self) -> int:
        """Apply a burst of batches; returns the number of changes they consumed (0 =
        idle: a batch of canaries only is not traffic, so it leaves the direction quiet).
        Under a rate limit (claim_limit) one batch, so the loop paces every batch.
        A one-way batch with another taken ahead of it has its sink flush and source commit
        (_commit) run while that one applies; all of them are done when this returns."""
        base = limit = min(self.link.batch_size, self.claim_limit or self.link.batch_size)
        n = 0
        async with self.gate:
            deadline = time.monotonic() + BURST
            held = await self._take(limit)
            self.more = False
            before = committing = None  # batches still committing: the one before last, last
            try:
                while held is not None:
                    ahead = None
                    full = len(held.signals) >= limit
                    try:
                        if before is not None:  # at most one batch commits while one applies
                            await asyncio.shield(before)
                        if full and self.claim_limit is None and time.monotonic() < deadline:
                            # a backlog: batches grow, so a catch-up pays fewer commits per row
                            if held.staged is None or held.staged.size < GROW_BYTES:
                                limit = min(limit * 2, base * GROW_MAX)
                            ahead = asyncio.ensure_future(self._take(limit))
                        # with nothing taken ahead, nothing would overlap its flush: the
                        # sink commit waits for it, one round trip fewer
                        held.unflushed = self.pipelined and ahead is not None
                        sink, out, record, canary = await self._apply_held(held)
                    except BaseException:
                        await held.release()
                        self.floor.reset()  # the batch's signals are queued again, below it
                        if ahead is not None:
                            await drop_ahead(ahead)
                        raise
                    before, committing = committing, asyncio.ensure_future(
                        self._commit(committing, held, sink, out, record, canary))
                    if not held.unflushed:  # committed in turn
                        try:
                            await asyncio.shield(committing)
                        except BaseException:
                            if ahead is not None:
                                await drop_ahead(ahead)
                            raise
                    n += held.taken.changes
                    self.more = full
                    held = await ahead if ahead is not None else None
                for f in (before, committing):
                    if f is not None:
                        await asyncio.shield(f)
            except BaseException as e:
                await self._given_back([before, committing],
                                       cancel=isinstance(e, asyncio.CancelledError))
                raise
        return n

    async def _given_back(self, futures: list[asyncio.Future | None], cancel: bool) -> None:
        """Wait for the batches still committing while another failure is raised: each
        commits, or is given back and logged so (cancelled too, on a cancel: a stop or a
        lost leadership ends its drain at once; recovery finishes what the sink kept)."""
        pending = [f for f in futures if f is not None]
        if cancel:
            for f in pending:
                f.cancel()
        if pending:
            await asyncio.wait(pending)
        for f in pending:
            if not f.cancelled() and f.exception() is not None:
                log.info("event=batch_given_back link=%s error=%s", self.name,
                         errors.describe_safe(f.exception()))

    async def flush(self) -> None:
        await self.tally.flush()

    async def _take(self, limit: int) -> Held | None:
        """Take the next batch at the source and read its rows (the transaction stays open)."""
        conn = await self.source.acquire()
        held = Held(self.source, conn)
        with_rows = True  # a small batch's rows come with its take: one round trip fewer
        try:
            await conn.execute(SQL["hold"])
            args = (self.link.name, self.src, limit, self.source_table, self.floor.next())
            inline = TAKE_ROWS_BELOW if self.stage_from is None else min(self.stage_from,
                                                                           TAKE_ROWS_BELOW)
            try:
                held.signals = await conn.fetch(self.sql.take_rows, *args, inline)
            except asyncpg.PostgresError as e:
                if (errors.sqlstate(e) or "")[:2] not in ("42", "54"):
                    raise
                # the table changed under the read (a column dropped, renamed: the plain
                # take's shape check below says what changed), or its rows are more than
                # one value holds (54000, 1 GB): read apart, a row a result row
                await conn.execute("rollback")
                await conn.execute(SQL["hold"])
                with_rows = False
                held.signals = await conn.fetch(TAKE, *args)
            if not held.signals:  # nothing taken: committing and rolling back are the same
                await held.commit()
                return None
            first = next(s for s in held.signals if s["shape"])  # the shape and the bounds
            self.check_shape(self.src, first["shape"])
            faults.hit("after_claim")
            held.taken = taken = Taken.of(held.signals)
            self.floor.took(max(taken.ids), first["xmin"], first["xmax"])
            rows = first["rows"] if with_rows else None
            if rows is not None:
                held.upserts, held.deletes = self._items(rows, taken.keys)
            elif self.stage_from is not None and len(taken.keys) >= self.stage_from:
                held.staged = await staged.read(conn, self.sql.staged, list(taken.keys))
            else:
                held.upserts, held.deletes = await self._read(conn, taken.keys)
        except BaseException:
            self.floor.reset()  # its signals are queued again, below the floor
            await held.release()
            raise
        return held

    async def _apply_held(self, held: Held
                          ) -> tuple[asyncpg.Connection, Outcome, BatchRecord, Any]:
        """Apply and record the batch at the sink; returns the sink connection that
        committed it (a pipelined link's commit may not be flushed yet: _commit waits for
        that on this connection, which a sink restart would have closed)."""
        # one-way: first without savepoints; a row error runs the transaction again with
        # them (two-way settling asks the hub and a resolver: run once, with savepoints)
        savepoints = self.two_way
        conn = await self.sink.acquire()
        try:
            while True:
                try:
                    out, record, canary = await self._apply(conn, held, savepoints)
                    break
                except staged.Unavailable as e:
                    log.warning("event=staging_unavailable link=%s error=%r "
                                "action=items_only hint=grant_temporary_on_the_sink_database",
                                self.name, str(e))
                    self.stage_from = None
                except Isolate as e:  # on the item path, with savepoints: it isolates the row
                    if held.staged is not None:
                        log.info("event=staged_batch_isolating link=%s keys=%d sqlstate=%s",
                                 self.name, len(held.taken.keys),
                                 errors.sqlstate(e.__cause__))
                    savepoints = True
                await self._unstaged(held)
        except BaseException:
            await self.sink.release(conn)
            raise
        faults.hit("after_sink_commit")
        return conn, out, record, canary

    async def _commit(self, before: asyncio.Future | None, held: Held,
                      sink: asyncpg.Connection, out: Outcome, record: BatchRecord,
                      canary: Any) -> None:
        """The batch's source side, once the sink's flush covers its commit: the
        follow-ups and the commit of the held source transaction, after the batch before
        it (`before`) committed. A failure gives the batch back (its signals are queued
        again; the sink's record, if it was kept, makes recovery replay only its
        follow-ups) and fails the batches after it the same way."""
        try:
            try:
                if held.unflushed:
                    await self._sink_flush(sink)
            finally:
                await self.sink.release(sink)
            if before is not None:
                await asyncio.shield(before)
            await self._finish(held.conn, held.batch_id, record, held.signals)
            await held.commit()
        except BaseException:
            await held.release()
            self.floor.reset()  # the batch's signals are queued again, below it
            raise
        faults.hit("after_source_commit")
        self.tally.add(out.upserts + out.deletes, out.deferred)
        applied = held.staged.keys if held.staged else [i.source_key for i in out.applied]
        if self.open_dead_letters and applied:
            await dead_letters.close(self.hub, self.link.name, self.src, applied)
        if canary is not None:
            await report.canary_arrived(self.hub, self.link.name, self.src, canary["sent_at"],
                                        canary["applied_at"])

    async def _sink_flush(self, conn: asyncpg.Connection) -> None:
        """Return once the sink's WAL is flushed past every commit `conn` made or saw:
        one statement whose synchronous commit flushes it (sink_flush). Where that may
        not run (EXECUTE on pg_logical_emit_message revoked), wait for the server's own
        flush of that position, and commit the link's batches synchronously from then on."""
        if self.flush_by_message:
            try:
                await conn.execute(SQL["sink_flush"])
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError) as e:
                if self.flush_by_message:  # once, though two batches may meet it at once
                    log.warning("event=sink_flush_unavailable link=%s sqlstate=%s "
                                "action=synchronous_commits hint=grant_execute_on_function_"
                                "pg_logical_emit_message", self.name, errors.sqlstate(e))
                self.flush_by_message = False
        lsn = await conn.fetchval(SQL["sink_insert_lsn"])
        deadline = time.monotonic() + FLUSH_WAIT
        while not await conn.fetchval(SQL["sink_flushed"], lsn):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the sink did not flush its WAL to {lsn} "
                                   f"within {FLUSH_WAIT:.0f} s")
            await asyncio.sleep(FLUSH_POLL)  # the WAL writer flushes within 3 x its delay

    async def _apply(self, conn: asyncpg.Connection, held: Held, savepoints: bool
                     ) -> tuple[Outcome, BatchRecord, Any]:
        """The batch's sink transaction on `conn`: its rows and its record (and canaries)."""
        upserts, deletes, taken = held.upserts, held.deletes, held.taken
        truncate, forced, canaries = taken.truncate, taken.forced, taken.canaries
        refused = False  # sync.apply_batch found the sink table's shape changed
        if (self.one_shot and not savepoints and held.staged is None and not truncate
                and not canaries):
            done = await self._apply_one_shot(conn, held)
            if done is not None:
                return done, done.record(), None
            refused = self.one_shot
        canary = None
        out = Outcome()
        async with conn.transaction():
            begun = await conn.fetchrow(SQL["sink_begin"], self.origin, self.sink_table,
                                        held.unflushed)
            self.check_shape(self.dst, begun[1])
            if refused:  # no change this check sees: the two spell the shape apart
                log.warning("event=one_shot_shape_mismatch link=%s action=transactions_only",
                            self.name)
                self.one_shot = False
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
            if held.staged is not None:  # a large one-way batch: one COPY stream
                out.deletes, out.upserts = await self._apply_staged(conn, held.staged)
            else:  # deletes first: a changed key frees unique values before the new row
                out.deletes = await self._apply_set(conn, self.sql.delete, deletes, out,
                                                    savepoints)
                out.upserts = await self._apply_set(conn, self.sql.upsert, upserts, out,
                                                    savepoints)
            if self.two_way:
                await self._remember(conn, out)
            record = out.record(truncate)
            recorded = await conn.execute(
                SQL["record_batch"], held.batch_id, self.link.name, self.src, len(taken.ids),
                out.upserts, out.deletes, record.problems, record.synced, record.conflicts,
                truncate, id_ranges(taken.ids),
            )
            if recorded.split()[-1] == "0":  # the sink transaction rolls back: nothing applied
                raise self._already_applied(held)
        return out, record, canary

    def _already_applied(self, held: Held) -> errors.AlreadyApplied:
        return errors.AlreadyApplied(f"{self.name}: signals of batch {held.batch_id} were "
                                     "applied before; recovering that batch first")

    async def _apply_one_shot(self, conn: asyncpg.Connection, held: Held) -> Outcome | None:
        """A one-way batch of items as one sink statement, outside a transaction (one round
        trip where BEGIN, origin and shape, delete, upsert, record and COMMIT took five or
        six). None when the sink's table changed shape (or the sink lacks the function):
        nothing was done, and the batch takes the usual path, which says what changed.
        A row the sink rejects raises Isolate: nothing was applied, the usual path with
        savepoints isolates it."""
        deletes = [] if self.link.deletes == "ignore" else held.deletes
        ids = held.taken.ids
        try:
            row = await conn.fetchrow(
                SQL["apply_batch"], self.origin, self.sink_table, self.sink_shape,
                self.sql.delete, json_array([i.payload for i in deletes]) if deletes else None,
                self.sql.upsert,
                json_array([i.payload for i in held.upserts]) if held.upserts else None,
                held.batch_id, self.link.name, self.src, len(ids), id_ranges(ids),
                held.unflushed)
        except asyncpg.UndefinedFunctionError as e:
            if "apply_batch" not in str(e):  # a function a trigger of the sink table calls
                raise
            log.info("event=one_shot_unavailable link=%s hint=run_syncbridge_migrate", self.name)
            self.one_shot = False
            return None
        except asyncpg.PostgresError as e:
            if errors.sqlstate(e) == ALREADY_APPLIED:
                raise self._already_applied(held) from e
            if row_error(e):
                raise Isolate from e
            if errors.sqlstate(e) == errors.FEATURE_NOT_SUPPORTED:  # a rule on the sink table:
                # its statements cannot run in WITH (0015's prepared counts); nothing was done
                log.info("event=one_shot_unavailable link=%s sqlstate=0A000 "
                         "action=transactions_only", self.name)
                self.one_shot = False
                return None
            raise
        if not row["shape_ok"]:
            return None
        out = Outcome(upserts=row["upserted"], deletes=row["deleted"])
        out.applied.extend(deletes)
        out.applied.extend(held.upserts)
        return out

    async def _apply_staged(self, conn: asyncpg.Connection, rows: staged.Rows
                            ) -> tuple[int, int]:
        """A staged batch: straight into the sink table when every key has a row and the
        sink takes them as new, else through the staging table. (deleted, upserted)"""
        if self.direct.due(rows):
            put = await staged.insert(conn, self.sql.staged, rows, self.direct, self.name)
            if put is not None:
                return 0, put
        return await staged.apply(conn, self.sql.staged, rows, self.link.deletes != "ignore")

    async def _unstaged(self, held: Held) -> Held:
        """The batch as items (read again in its held source transaction), to run on the
        item path: a staged batch whose sink rejected a row, or could not stage."""
        if held.staged is not None:
            held.staged = None
            held.upserts, held.deletes = await self._read(held.conn, held.taken.keys)
        return held

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

    async def _read(self, conn: asyncpg.Connection, attempts: dict[str, int]
                    ) -> tuple[list[Item], list[Item]]:
        """Current source rows for the batch's distinct keys: upserts and deletes."""
        if not attempts:
            return [], []
        return self._items(await conn.fetch(self.sql.read_rows, json_array(list(attempts))),
                           attempts)

    @staticmethod
    def _items(rows: Any, attempts: dict[str, int]) -> tuple[list[Item], list[Item]]:
        """read_rows' rows (its records, or take_rows' tuples: row, key, ka, skey, img) as
        the batch's upserts and deletes."""
        upserts: dict[str, Item] = {}  # by the row's own key: one item per sink row
        deletes = []
        worst = max(attempts.values(), default=0)  # once: a default is evaluated every call
        for row, key, ka, skey, img in rows:
            tries = attempts.get(skey, worst)
            if row is None:
                deletes.append(Item(skey, key, ka or key, key, None, tries))
            else:
                upserts.setdefault(key, Item(skey, key, ka or key, row, img, tries))
        return list(upserts.values()), deletes

    async def _apply_set(self, conn: asyncpg.Connection, stmt: str, items: list[Item],
                         out: Outcome, savepoints: bool = True) -> int:
        """Apply items in one statement; on a row error, bisect to isolate the bad rows."""
        return await apply_set(conn, stmt, items, out, self._problem, savepoints)

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
