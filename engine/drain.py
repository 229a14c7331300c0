"""One (link, direction) of the pipeline: claim signals, read current rows, apply.

The order is what makes a crash harmless (PgQ's remote consumer):
1. claim: mark visible signals with a new batch id (committed at the source);
2. read the current source rows for their keys, apply them to the sink and
   record the batch id in the sink, all in one sink transaction;
3. delete the batch's signals at the source.
A restart finds claimed batches and looks the id up in the sink: recorded
means only step 3 is left; not recorded means the batch is applied now. So no
batch is ever applied twice, and no signal is lost.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from . import capture, errors, faults, pg_sql, sqlfiles
from .catalog import LinkShape

log = logging.getLogger("syncbridge.drain")


def Q(name: str) -> str:  # noqa: N802 - reads like a table of named statements
    return sqlfiles.query("queries/bridge.sql", name)


@dataclass
class Item:
    """One row (or key to delete) of a batch, with the source key it came from."""

    source_key: str  # jsonb text in source column names
    payload: str  # jsonb text in sink column names
    attempts: int = 0


@dataclass
class Outcome:
    upserts: int = 0
    deletes: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    clean_keys: list[str] = field(default_factory=list)


class PgDrain:
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
        self.max_attempts = max_attempts
        self.open_dead_letters = True  # refreshed by the stats task; True = check

    @property
    def name(self) -> str:
        return f"{self.link.name}:{self.src}->{self.dst}"

    async def recover(self) -> int:
        """Finish every batch a previous run claimed but did not finish."""
        pending = await self.source.fetch(Q("pending_batches"), self.link.name, self.src)
        for row in pending:
            await self._resume(row["batch_id"])
        if pending:
            log.info("event=recovered link=%s batches=%d", self.name, len(pending))
        return len(pending)

    async def _resume(self, batch_id: uuid.UUID) -> None:
        signals = await self.source.fetch(Q("batch_signals"), batch_id)
        record = await self.sink.fetchval(Q("batch_record"), batch_id)
        if record is None:
            await self._apply_and_finish(batch_id, signals)
        else:  # applied before the crash: only the source cleanup is left
            await self._finish(batch_id, json.loads(record), Outcome(), count=False)

    async def drain_once(self) -> int:
        """Apply one batch; returns the number of signals it consumed (0 = idle)."""
        batch_id = uuid.uuid4()
        signals = await self.source.fetch(
            Q("claim"), self.link.name, self.src, self.link.batch_size, batch_id
        )
        if signals:
            faults.hit("after_claim")
            await self._apply_and_finish(batch_id, signals)
        return len(signals)

    async def _apply_and_finish(self, batch_id: uuid.UUID, signals: list) -> None:
        upserts, deletes = await self._read(signals)
        truncate = any(s["op"] == "T" for s in signals)
        out = Outcome()
        async with self.sink.acquire() as conn, conn.transaction():
            await conn.execute(Q("set_origin"), self.origin)
            if truncate:
                await conn.execute(self.sql.truncate)
            # deletes first: a changed key frees unique values before the new row arrives
            out.deletes = await self._apply_set(conn, self.sql.delete, deletes, out)
            out.upserts = await self._apply_set(conn, self.sql.upsert, upserts, out)
            await conn.execute(
                Q("record_batch"), batch_id, self.link.name, self.src, len(signals),
                out.upserts, out.deletes, json.dumps(out.problems),
            )
        faults.hit("after_sink_commit")
        await self._finish(batch_id, out.problems, out)

    async def _read(self, signals: list) -> tuple[list[Item], list[Item]]:
        """Current source rows for the batch's distinct keys: upserts and deletes."""
        attempts: dict[str, int] = {}
        for s in signals:
            if s["op"] == "K":
                attempts[s["key"]] = max(attempts.get(s["key"], 0), s["attempts"])
        if not attempts:
            return [], []
        rows = await self.source.fetch(
            self.sql.read_rows, "[" + ",".join(attempts) + "]"
        )
        upserts, deletes = [], []
        for r in rows:
            skey = r["skey"]
            tries = attempts.get(skey, max(attempts.values()))
            if r["row"] is None:
                deletes.append(Item(skey, r["key"], tries))
            else:
                upserts.append(Item(skey, r["row"], tries))
        return upserts, deletes

    async def _apply_set(self, conn: asyncpg.Connection, stmt: str, items: list[Item],
                         out: Outcome) -> int:
        """Apply items in one statement; on a row error, bisect to isolate the bad rows."""
        if not items:
            return 0
        try:
            async with conn.transaction():  # a savepoint: a failure undoes only this part
                status = await conn.execute(stmt, "[" + ",".join(i.payload for i in items) + "]")
        except asyncpg.PostgresError as e:
            if not errors.is_row_error(e):
                raise
            if len(items) == 1:
                out.problems.append(self._problem(items[0], e))
                return 0
            mid = len(items) // 2
            return (await self._apply_set(conn, stmt, items[:mid], out)
                    + await self._apply_set(conn, stmt, items[mid:], out))
        out.clean_keys.extend(i.source_key for i in items)
        return int(status.split()[-1])

    def _problem(self, item: Item, exc: Exception) -> dict[str, Any]:
        defer = errors.sqlstate(exc) == errors.FK_VIOLATION and item.attempts < self.max_attempts
        log.warning("event=row_%s link=%s key=%s error=%s", "deferred" if defer else "dead",
                    self.name, item.source_key, errors.describe(exc))
        return {"key": json.loads(item.source_key), "error": errors.describe(exc), "defer": defer}

    async def _finish(self, batch_id: uuid.UUID, problems: list[dict[str, Any]], out: Outcome,
                      count: bool = True) -> None:
        """Source cleanup after the sink committed: dead letters, deferrals, delete signals."""
        dead = [p for p in problems if not p["defer"]]
        deferred = [json.dumps(p["key"]) for p in problems if p["defer"]]
        if dead:
            await self.hub.executemany(Q("dead_letter"), [
                (self.link.name, self.src, json.dumps(p["key"]), p["error"]) for p in dead
            ])
        async with self.source.acquire() as conn, conn.transaction():
            if deferred:
                await conn.execute(Q("defer_keys"), batch_id, deferred, 1.0)
            await conn.execute(Q("finish_batch"), batch_id)
        if count:
            await self.hub.execute(Q("report_batch"), self.link.name, self.src,
                                   out.upserts + out.deletes)
        if self.open_dead_letters and out.clean_keys:
            await self.hub.execute(Q("close_dead_letters"), self.link.name, self.src,
                                   out.clean_keys)

    async def depth(self) -> tuple[int, Any]:
        row = await self.source.fetchrow(Q("queue_depth"), self.link.name, self.src)
        return row["queued"], row["oldest"]
