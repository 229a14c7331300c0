"""The staged path between Postgres peers: a large one-way batch as one COPY stream.

The item path (drain.py `_read`, `apply_set`) builds every row into jsonb at the
source, decodes it into Python, joins the rows into one jsonb array and has the
sink parse it again. For a batch of STAGE_FROM keys or more, the rows go as COPY
text instead: `COPY (select ... ::text ...) TO STDOUT` in the held source
transaction, then `COPY ... FROM STDIN` into a staging table on the sink
connection, then one delete and one upsert from it. Python passes the bytes on
without looking inside; values are still each column's own text under the pinned
session settings, read back through the sink column's input function (a domain
as its base type at COPY, its checks applied by the insert), so what arrives is
what the item path delivers. A row error raises Isolate: the drain runs the batch
again on the item path, which isolates the row.

Small batches keep the item path: staging costs two more round trips (the
staging table's `create if not exists` and COPY's own), which a one-row batch at
low latency would pay in full.

A batch whose keys all have rows at the source (a backlog of inserts, a bulk
load) is first COPYed straight into the sink table, in a savepoint: no staging
table, no upsert (about 3 of 8 microseconds a row at the sink). Should the sink
have one of the keys already, or refuse a row, the savepoint is rolled back and
the batch is staged as above, which updates existing rows and isolates a bad
one; after such a refusal the direct try waits a while (Direct).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from psycopg import sql

from syncbridge.engine import errors
from syncbridge.engine.contract import json_array
from syncbridge.engine.postgres.sink import Isolate, row_error
from syncbridge.engine.postgres.sql import StagedSql

log = logging.getLogger("syncbridge.drain")

# keys in a batch from which it is staged; SYNCBRIDGE_STAGE_FROM=1 stages every
# one-way batch (the tests run the staged path that way)
STAGE_FROM = int(os.environ.get("SYNCBRIDGE_STAGE_FROM", "100"))
DIRECT_WAIT_MAX = 256  # staged batches a refused direct COPY waits at most before the next try


class Unavailable(Exception):
    """The sink role may not create temporary tables (`grant temporary on database`):
    the drain carries its batches as items instead, and says so once."""


@dataclass(frozen=True)
class Rows:
    """A batch's source rows as COPY text: each line `t|f <tab> column texts`, in the
    chunks COPY gave them (each a run of whole lines: one CopyData message is one row),
    passed on as they are, not joined: a batch's rows are megabytes."""

    chunks: list[bytes]
    found: int
    missing: int
    keys: list[str]  # the batch's distinct source keys (jsonb text), for dead-letter closing

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks))


async def read(conn: asyncpg.Connection, stmt: StagedSql, keys: list[str]) -> Rows:
    """The current source rows of the keys, in the held source transaction on conn.
    The keys go as one literal (COPY takes no parameters), quoted by psycopg."""
    chunks: list[bytes] = []

    async def keep(chunk: bytes) -> None:
        chunks.append(chunk)

    literal = sql.Literal(json_array(keys)).as_string(None)
    await conn.copy_from_query(stmt.read_head + literal + stmt.read_tail, output=keep)
    # one row per key (the join is on the key); a value's own newlines and tabs are
    # escaped by COPY, so a row whose first field is f starts a chunk or a line
    missing = sum(c.count(b"\nf\t") + c.startswith(b"f\t") for c in chunks)
    return Rows(chunks, len(keys) - missing, missing, keys)


async def apply(conn: asyncpg.Connection, stmt: StagedSql, rows: Rows, deletes: bool
                ) -> tuple[int, int]:
    """Stage the rows in the sink transaction on conn, then delete the missing keys'
    rows (first, as the item path does: a changed key frees its unique values) and
    upsert the found ones. Returns (deleted, upserted)."""
    async def stream() -> AsyncIterator[bytes]:
        for chunk in rows.chunks:
            yield chunk

    try:
        await conn.execute(stmt.create)
    except asyncpg.InsufficientPrivilegeError as e:
        raise Unavailable(str(e)) from e
    try:
        await conn.copy_to_table(stmt.stage[1], schema_name=stmt.stage[0], source=stream())
        gone = put = "0"
        if deletes and rows.missing:
            gone = (await conn.execute(stmt.delete)).split()[-1]
        if rows.found:
            put = (await conn.execute(stmt.upsert)).split()[-1]
    except asyncpg.PostgresError as e:
        if row_error(e):
            raise Isolate from e
        raise
    return int(gone), int(put)


@dataclass
class Direct:
    """When a drain tries a batch's rows as a COPY straight into the sink table. After
    a refusal (a key the sink has: an update backlog) the next tries wait 1, 2, 4 ...
    up to DIRECT_WAIT_MAX staged batches, so a stream of updates pays a wasted COPY
    rarely; a success resets the wait. A sink that cannot take a COPY at all (a view,
    a missing privilege) is not tried again."""

    wait: int = 0  # staged batches still to skip
    after: int = 0  # the wait after the next refusal
    off: bool = False

    def due(self, rows: Rows) -> bool:
        if self.off or rows.missing:
            return False
        if self.wait:
            self.wait -= 1
            return False
        return True

    def refused(self) -> None:
        self.after = min(max(1, self.after * 2), DIRECT_WAIT_MAX)
        self.wait = self.after

    def took(self) -> None:
        self.wait = self.after = 0


async def insert(conn: asyncpg.Connection, stmt: StagedSql, rows: Rows, direct: Direct,
                 name: str) -> int | None:
    """COPY a batch whose keys all have source rows straight into the sink table, in a
    savepoint of the sink transaction on conn: the number of rows, or None when the sink
    refused (rolled back to the savepoint; the caller stages the batch)."""
    # every line starts with the found field "t<tab>" (rows.missing is 0): drop it; a
    # value's own newlines are escaped by COPY, so every newline ends a line, and every
    # chunk starts one
    async def stream() -> AsyncIterator[bytes]:
        for chunk in rows.chunks:
            yield chunk[2:].replace(b"\nt\t", b"\n")

    try:
        async with conn.transaction():
            status = await conn.copy_to_table(stmt.target[1], schema_name=stmt.target[0],
                                              columns=list(stmt.columns), source=stream())
    except asyncpg.PostgresError as e:
        state = errors.sqlstate(e) or ""
        if row_error(e):  # a key the sink has (23505), or a row it rejects: stage
            direct.refused()
            return None
        if state[:2] in ("42", "0A"):  # no COPY into this table: stage from now on
            direct.off = True
            log.info("event=direct_copy_unavailable link=%s sqlstate=%s action=staged_only",
                     name, state)
            return None
        raise
    direct.took()
    return int(status.split()[-1])
