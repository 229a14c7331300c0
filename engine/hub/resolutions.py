"""Enacting conflicts an operator resolved with sync.resolve_conflict().

The winner's current row is sent again, unchecked (an 'R' signal at a
Postgres winner's queue, a [sync].[resend] entry at a SQL Server winner), so
the loser side takes it; under `merge` the settled merge
(the loser's edits of other columns kept) is first written on the winner's
side as the bridge's own write. The conflict is then marked resolved."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import asyncpg

from syncbridge.engine import conflicts, sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Link
from syncbridge.engine.contract import Drain, RowProblem, problem

SQL = sqlfiles.Queries("hub/conflicts.sql")
QUEUE = sqlfiles.Queries("postgres/queue.sql")
log = logging.getLogger("syncbridge.bridge")


def key_json(value: Any) -> str:
    """JSON of a key parsed with Decimals: a Decimal goes as its exact text (a JSON
    string, which jsonb_to_recordset reads back into the numeric key column)."""
    return json.dumps(value, default=str)


async def enact(hub: asyncpg.Pool, shapes: dict[str, LinkShape],
                pools: dict[str, asyncpg.Pool], drains: list[Drain],
                wake: Callable[[str, str], None], mssql: dict[str, Any] | None = None) -> None:
    """Each resolving conflict: the winner's row re-sent from a Postgres winner's
    queue ('R' signal) or a SQL Server winner's [sync].[resend] (`mssql`: its peers)."""
    for r in await hub.fetch(SQL["resolving_conflicts"]):
        shape = shapes.get(r["link"])
        if shape is None:
            continue
        winner = r["winner"]
        ka = json.loads(r["key"], parse_float=Decimal)  # a numeric key keeps its digits
        key = {w: ka[a] for a, w in zip(shape.key_cols("a"), shape.key_cols(winner),
                                        strict=True)}
        if shape.link.conflict == "merge":  # keep the loser's edits of other columns
            merged = conflicts.settled_merge(shape.link, conflicts.load(r["a"]),
                                             conflicts.load(r["b"]), conflicts.load(r["last"]),
                                             winner)
            [drain] = [d for d in drains if d.link.name == shape.link.name and d.dst == winner]
            await drain.write_settled(merged, key_json(key))
        peer = shape.link.side(winner).peer
        if peer in pools:
            await pools[peer].execute(QUEUE["resignal"], r["link"], winner, key_json([key]))
        elif mssql and peer in mssql:  # the key in the SQL Server side's column names
            await mssql[peer].execute("resend_request", r["link"], winner, key_json([key]))
        else:
            continue  # that peer is not connected in this term: the next one enacts it
        await hub.execute(SQL["conflict_resolved"], r["id"])
        wake(r["link"], winner)
        log.info("event=conflict_resolved id=%s link=%s winner=%s", r["id"], r["link"], winner)


async def record(hub: asyncpg.Pool, link: str, policy: str, batch_id: Any,
                 entries: str) -> None:
    """A batch's conflicts (a JSON array), as sync.conflicts rows."""
    await hub.execute(SQL["record_conflict"], link, policy, batch_id, entries)


def resolver_sql(policy: str) -> str | None:
    """The hub statement calling a conflict = "function:schema.fn" resolver (else None)."""
    if not policy.startswith("function:"):
        return None
    schema, _, fn = policy.removeprefix("function:").partition(".")
    return SQL.render("resolver_call", fn=(schema, fn))


async def run_resolver(hub: asyncpg.Pool, statement: str, link: Link, src: str, key: str,
                       drain: str, source_key: str, source: conflicts.Image,
                       sink: conflicts.Image, base: conflicts.Image,
                       problems: list[RowProblem]) -> conflicts.Verdict | None:
    """conflict = "function:s.fn": the hub's fn(link, key, a, b, base) -> row or NULL, as
    a verdict. Its error, or a row of other columns, dead-letters the key (None: skip it).
    Every drain with a two-way link calls this one (Postgres and SQL Server sinks)."""
    dst = "b" if src == "a" else "a"
    images = {src: source, dst: sink}
    try:
        text = await hub.fetchval(statement, link.name, key, conflicts.dump(images["a"]),
                                  conflicts.dump(images["b"]), conflicts.dump(base))
    except asyncpg.PostgresError as e:
        problems.append(problem(drain, source_key, e, defer=False))
        return None
    row = conflicts.load(text)
    if row is not None and set(row) != set(source or sink or row):
        exc = ValueError(f"resolver {link.conflict[9:]} returned columns "
                         f"{sorted(row)}, not the link's {sorted(source or sink or {})}")
        problems.append(problem(drain, source_key, exc, defer=False))
        return None
    if row == source:
        return conflicts.Verdict(conflicts.APPLY, True, src)
    if row == sink:
        return conflicts.Verdict(conflicts.KEEP_SINK, True, dst)
    return conflicts.Verdict(conflicts.MERGE, True, "merge", row=row)
