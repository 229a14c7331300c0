"""What every Postgres sink of a batch shares, whatever feeds it (a Postgres queue or
SQL Server change tracking): the schema check of the linked table and the
set-based apply that isolates the rows the sink rejects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from syncbridge.engine import errors
from syncbridge.engine.catalog import Table
from syncbridge.engine.contract import Item, Outcome, RowProblem, isolate, json_array


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


def row_error(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and errors.is_row_error(exc)


class Isolate(Exception):
    """A row error in a statement run without a savepoint: the sink transaction is
    aborted, and is run again with savepoints to isolate the row (PgDrain)."""


async def apply_set(conn: asyncpg.Connection, stmt: str, items: list[Item], out: Outcome,
                    problem_of: Callable[[Item, BaseException], RowProblem],
                    savepoints: bool = True) -> int:
    """One set-based Postgres statement over items' payloads, each try in a savepoint;
    rows the sink rejects go to out.problems (via problem_of), the rest to out.applied.
    Without savepoints (two round trips fewer) a row error raises Isolate instead."""
    if not savepoints and items:
        try:
            status = await conn.execute(stmt, json_array([i.payload for i in items]))
        except asyncpg.PostgresError as e:
            if row_error(e):
                raise Isolate from e
            raise
        out.applied.extend(items)
        return int(status.split()[-1])

    async def attempt(part: list[Item]) -> int:
        async with conn.transaction():  # a savepoint: a failure undoes only this part
            status = await conn.execute(stmt, json_array([i.payload for i in part]))
        return int(status.split()[-1])

    n, applied = await isolate(items, attempt, row_error,
                               lambda i, e: out.problems.append(problem_of(i, e)))
    out.applied.extend(applied)
    return n
