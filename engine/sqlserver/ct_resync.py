"""Recovery paths of a change-tracking source feeding a Postgres sink (CtToPgDrain):
the resync (every source row again, then the sink's extra keys swept away) and
the re-read of dead-lettered keys. Change tracking has no queue, so both read
the source's current rows by key and apply them like any change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Link
from syncbridge.engine.contract import Outcome
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.sqlserver import convert
from syncbridge.engine.sqlserver.changes import CtCursor
from syncbridge.engine.sqlserver.peer import MssqlPeer
from syncbridge.engine.sqlserver.two_way import state_entry

log = logging.getLogger("syncbridge.mssql_drain")
SQL = sqlfiles.Queries("queries/mssql_bridge.sql")
QUEUE = sqlfiles.Queries("postgres/queue.sql")  # the queue statements PgDrain uses too

PAGE_ROWS = 1000  # rows per keyset page of a resync or a truncate sweep
RETRY_KEYS = 500  # dead-lettered keys of a change-tracking source re-read per tick


@dataclass(frozen=True)
class SweepSql:
    first: str  # $1 limit -> key (jsonb text, sink names), in key order
    next: str  # $1 limit, $2 jsonb key to start after
    delete: str  # $1 jsonb keys of a page, $2 jsonb keys the source has, $3 link, $4 sink side


def sweep_sql(shape: LinkShape, sink: str) -> SweepSql:
    """Sink keys page by page (keyset, never OFFSET) and the delete of the ones the
    source lacks, sparing keys with a signal queued at the sink (a fresh local write
    of a two-way link that has not reached the source yet)."""
    keys = shape.key_cols(sink)
    s = shape.link.side(sink)
    fields = {
        "table": (s.schema, s.table),
        "key_obj": pg_sql.typed_obj(keys, "t", keys),
        "ka_obj": pg_sql.typed_obj(shape.key_cols("a"), "t", keys),
        "order": sql.SQL(", ").join(sql.Identifier("t", k) for k in keys),
        "after": sql.SQL(", ").join(sql.Identifier("a", k) for k in keys),
        "defs": pg_sql.key_defs(shape, sink),
        "tk_join": _join("t", "k", keys),
        "pt_join": _join("p", "t", keys),
    }
    return SweepSql(SQL.render("sweep_first", **fields), SQL.render("sweep_next", **fields),
                     SQL.render("sweep_delete", **fields))


def _join(left: str, right: str, keys: list[str]) -> sql.Composable:
    """l.k1 = r.k1 and ...: the key equality of two aliases of one table's key."""
    return sql.SQL(" and ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k))
        for k in keys)


class CtRecovery:
    """The resync and dead-letter paths of CtToPgDrain (its base class); they only use
    the drain's attributes below and its `_apply` / `_observe`."""

    shape: LinkShape
    link: Link
    name: str
    src: str
    dst: str
    mssql: MssqlPeer
    sink: asyncpg.Pool
    hub: asyncpg.Pool
    origin: str
    page_rows: int
    max_attempts: int
    sweep_sql: SweepSql
    _src_keys: list[str]
    _dst_keys: list[str]
    _dst_key_types: list[str]

    two_way: bool

    async def _apply(self, upserts: Sequence[dict[str, Any]], deletes: Sequence[dict[str, Any]],
                     cursor: CtCursor | None, *, signals: int | None = None,
                     close: Sequence[str] = (), forced: set[str] = frozenset(),
                     unknown_base: bool = False) -> Outcome:
        raise NotImplementedError

    def _observe(self, version: int | None, cursor: CtCursor | None) -> None:
        raise NotImplementedError

    # dead letters of this source, read again

    async def _current(self, texts: list[str]) -> tuple[list[dict[str, Any]],
                                                         list[dict[str, Any]], set[str]]:
        """The source's current rows for these key texts (source names, as the dead
        letters and [sync].[resend] hold them), the keys it no longer has, and the
        normalized key texts of the rows found."""
        parsed = [convert.loads(t) for t in texts]
        src_table = self.shape.table(self.src)
        keys = [{k: convert.for_mssql(p.get(k), src_table.columns[k].type) for k in self._src_keys}
                for p in parsed]
        present = await self.mssql.read_rows(self.shape, self.src, keys)
        have = {convert.norm(convert.pg_object(self._src_keys, [r[k] for k in self._src_keys],
                                               self._dst_key_types)) for r in present}
        gone = [p for t, p in zip(texts, parsed, strict=True) if convert.norm(t) not in have]
        return present, gone, have

    async def _retry_dead(self) -> int:
        """Keys parked earlier that sync.retry_dead() released, or foreign-key misses
        within max_attempts: read their current rows again and apply (or delete) them."""
        rows = await self.hub.fetch(SQL["ct_retry_keys"], self.link.name, self.src,
                                    self.max_attempts, RETRY_KEYS)
        if not rows:
            return 0
        texts = [r["key"] for r in rows]
        present, gone, _ = await self._current(texts)
        await self.hub.execute(SQL["ct_retry_taken"], self.link.name, self.src, texts)
        log.info("event=dead_letters_retried link=%s keys=%d", self.name, len(texts))
        await self._apply(present, gone, None, close=texts)
        return len(texts)

    async def _resend(self) -> int:
        """Keys the SQL Server side queued in [sync].[resend] (its row won a conflict, a
        merged row was written there, or an operator chose it): read their current rows
        and apply them unchecked, then drop the entries (a crash re-sends: harmless)."""
        rows = await self.mssql.execute("resend_read", RETRY_KEYS, self.link.name, self.src)
        if not rows:
            return 0
        texts = [r[0] for r in rows]
        present, gone, have = await self._current(texts)
        forced = have | {convert.norm(t) for t in texts}
        await self._apply(present, gone, None, forced=forced)
        await self.mssql.execute("resend_done", self.link.name, self.src,
                                 convert.json_text(texts))
        log.info("event=resent link=%s keys=%d", self.name, len(texts))
        return len(texts)

    # resync

    def _resync_reason(self, cursor: CtCursor | None, new: CtCursor) -> str:
        if cursor is None:
            return "no stored cursor (first run of this link)"
        if cursor.db_identity and new.db_identity and cursor.db_identity != new.db_identity:
            return "source database identity changed (restored?)"
        if cursor.version > new.version:
            return "stored cursor is ahead of the source database (restored?)"
        return ("stored cursor is older than CHANGE_TRACKING_MIN_VALID_VERSION "
                "(outage longer than the retention, or TRUNCATE)")

    async def resync(self, cursor: CtCursor | None, new: CtCursor) -> int:
        """Send every source row (keyset pages), delete sink rows the source lacks
        (not on a first run: the sink may hold rows of its own), then store `new`."""
        reason = self._resync_reason(cursor, new)
        log.warning("event=resync link=%s reason=%s version=%d", self.name, reason, new.version)
        await self.hub.execute(SQL["report_note"], self.link.name, self.src,
                               f"resync started: {reason}")
        sent = 0
        after: dict[str, Any] | None = None
        while True:
            page = await self.mssql.read_keys_page(self.shape, self.src, after,
                                                   self.page_rows, values=True)
            if not page:
                break
            # a first run has no bases yet: a row that differs takes this one (no_base)
            await self._apply(page, [], None, unknown_base=cursor is None)
            sent += len(page)
            after = {k: page[-1][k] for k in self._src_keys}
            if len(page) < self.page_rows:
                break
        deleted = await self._sweep() if cursor is not None else 0
        await self._apply([], [], new, signals=0)
        self._observe(new.version, new)
        log.info("event=resync_done link=%s rows=%d deleted=%d version=%d", self.name, sent,
                 deleted, new.version)
        await self.hub.execute(
            SQL["report_note"], self.link.name, self.src,
            f"resync done at version {new.version}: {sent} rows sent, {deleted} deleted "
            f"({reason})")
        return max(sent + deleted, 1)

    async def _sweep(self) -> int:
        """Delete sink rows whose key is gone at the source, one keyset page at a time."""
        src_table = self.shape.table(self.src)
        deleted = 0
        after: str | None = None
        while True:
            if after is None:
                rows = await self.sink.fetch(self.sweep_sql.first, self.page_rows)
            else:
                rows = await self.sink.fetch(self.sweep_sql.next, self.page_rows, after)
            if not rows:
                return deleted
            texts = [r["key"] for r in rows]
            keys = []
            for t in texts:
                p = convert.loads(t)
                keys.append({s: convert.for_mssql(p[d], src_table.columns[s].type)
                             for s, d in zip(self._src_keys, self._dst_keys, strict=True)})
            present = await self.mssql.read_rows(self.shape, self.src, keys)
            have = convert.json_array([
                convert.pg_object(self._dst_keys, [r[k] for k in self._src_keys],
                                  self._dst_key_types) for r in present])
            async with self.sink.acquire() as conn, conn.transaction():
                await conn.execute(QUEUE["set_origin"], self.origin)
                gone = [r["ka"] for r in await conn.fetch(
                    self.sweep_sql.delete, convert.json_array(texts), have, self.link.name,
                    self.dst)]
                if self.two_way and gone:  # absent on both sides now: that is their base
                    await conn.execute(QUEUE["state_write"], self.link.name,
                                       convert.json_array(state_entry(k, None) for k in gone))
            if self.two_way and gone:
                await self.mssql.write_states(self.link.name, [(k, None) for k in gone])
            deleted += len(gone)
            after = texts[-1]
            if len(rows) < self.page_rows:
                return deleted

