"""Apply queued webhook events (sync.queue op 'W') to their mapped tables.

The hub transaction that claims the events (FOR UPDATE SKIP LOCKED, id order)
stays open while they are applied and commits the dead letters, the counters
and the deletion of exactly the claimed ids. When the mapped table lives on
the hub that is one transaction; on another peer the sink commits first, and
a crash before the hub commit replays the batch, which is harmless because
every apply is state-based: an upsert of the event's row, guarded by the
version field, or a delete. Rows are written with
`syncbridge.origin = webhook:<source>` so capture carries them onward.

Lifecycle of a webhook dead letter (an event that cannot be applied: no
mapping now, a missing field, a bad value, a constraint):
- written here, by `_finish` running `dead_letter` of sql/queries/webhooks.sql:
  a sync.dead_letter row keyed {source, event_id}, and the payload kept on its
  sync.webhook_events dedupe record;
- retried by an operator with `sync.retry_webhook_v1(source, event_id)` or
  `sync.retry_dead()` (migrations/postgres/0008_webhook_dead_letters.sql),
  which queue the event again as op 'W' and close the dead letter; this drain
  then applies it, or reopens the dead letter if it fails again;
- documented for operators in docs/webhooks.md ("Dead letters").
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import quote_qualified
from syncbridge.engine.config import Config, Side
from syncbridge.engine.errors import describe, is_row_error, is_transient, sqlstate
from syncbridge.engine.webhooks.config import parse_webhooks
from syncbridge.engine.webhooks.map import MappedEvent, map_event
from syncbridge.engine.webhooks.model import TopicMap, WebhookConfig
from syncbridge.engine.webhooks.verify import EventError

log = logging.getLogger("syncbridge.webhooks")

BATCH_SIZE = 500  # events per hub transaction; locks are held while a remote sink applies
SQL = sqlfiles.Queries("queries/webhooks.sql")


@dataclass
class _Outcomes:
    applied: Counter[str] = field(default_factory=Counter)  # by source
    stale: Counter[str] = field(default_factory=Counter)
    dead: list[tuple[asyncpg.Record, str]] = field(default_factory=list)  # (event, error)


async def drain_webhook_events(hub: asyncpg.Pool, pools: dict[str, asyncpg.Pool],
                               config: Config, batch_size: int = BATCH_SIZE) -> int:
    """Apply one batch of webhook events; returns how many were processed (0 = none queued).

    Transient errors (connection, deadlock) propagate with nothing committed
    on the hub; the caller retries. An event that cannot be applied (no
    mapping, missing field, bad value, constraint) goes to sync.dead_letter
    and the rest of the batch still applies.
    """
    wh = parse_webhooks(config, secrets=False)
    async with hub.acquire() as hconn, hconn.transaction():
        events = await hconn.fetch(SQL["claim"], batch_size)
        if not events:
            return 0
        out = _Outcomes()
        by_peer: dict[str, list[tuple[asyncpg.Record, TopicMap, Side]]] = {}
        for ev in events:
            found = _route(wh, config, ev)
            if isinstance(found, str):
                out.dead.append((ev, found))
            else:
                by_peer.setdefault(found[1].peer, []).append((ev, *found))
        for peer, group in by_peer.items():
            if peer == config.hub:
                await _apply_group(hconn, wh, group, out)
            elif peer not in pools:
                raise KeyError(f"drain_webhook_events needs a pool for peer {peer!r}")
            else:
                async with pools[peer].acquire() as sconn, sconn.transaction():
                    await _apply_group(sconn, wh, group, out)
        await _finish(hconn, events, out)
    return len(events)


def _route(wh: WebhookConfig, config: Config,
           ev: asyncpg.Record) -> tuple[TopicMap, Side] | str:
    """The topic map and table of a queued event, or why there is none."""
    source = wh.sources.get(ev["source"])
    tmap = source.find(ev["topic"], ev["link"], ev["side"]) if source else None
    if tmap is not None and tmap.target is not None:  # a plain table, no link
        return tmap, tmap.target
    link = config.links.get(ev["link"])
    if tmap is None or link is None:
        return (f"no webhook mapping now for source {ev['source']!r} topic {ev['topic']!r} "
                f"link {ev['link']!r} side {ev['side']!r}")
    return tmap, link.side(ev["side"])


async def _apply_group(conn: asyncpg.Connection, wh: WebhookConfig,
                       group: list[tuple[asyncpg.Record, TopicMap, Side]],
                       out: _Outcomes) -> None:
    tables: dict[Side, set[str] | None] = {}
    origin = None
    for ev, tmap, side in group:
        if side not in tables:
            cols = await conn.fetch(SQL["columns"], quote_qualified(side))
            tables[side] = {r[0] for r in cols} or None
        try:
            mapped = map_event(wh.sources[ev["source"]], tmap, json.loads(ev["payload"]))
            _check_columns(side, tables[side], mapped)
        except EventError as e:
            out.dead.append((ev, str(e)))
            continue
        if origin != f"webhook:{ev['source']}":
            # set outside the savepoint below, so a rolled-back event does not undo it
            origin = f"webhook:{ev['source']}"
            await conn.execute("select set_config('syncbridge.origin', $1, true)", origin)
        try:
            async with conn.transaction():  # a savepoint: one bad row never sinks the batch
                fresh = await (_delete if mapped.delete else _upsert)(conn, side, tmap, mapped)
        except asyncpg.PostgresError as e:
            if is_transient(e) or not (is_row_error(e) or (sqlstate(e) or "").startswith("42")):
                raise
            out.dead.append((ev, f"{side.qualified}: {describe(e)}"))
            continue
        (out.applied if fresh else out.stale)[ev["source"]] += 1
        if not fresh:
            log.info("source=%s event=%s stale: %s has a newer row", ev["source"],
                     ev["event_id"], side.qualified)


def _check_columns(side: Side, columns: set[str] | None, mapped: MappedEvent) -> None:
    if columns is None:
        raise EventError(f"table {side.qualified} does not exist on peer {side.peer!r}")
    missing = sorted(set(mapped.row) - columns)
    if missing:
        raise EventError(f"column {missing[0]!r} does not exist in {side.qualified} "
                         f"on peer {side.peer!r}")


def _ids(*names: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _guard(name: str, tmap: TopicMap) -> sql.Composable:
    """The version guard `name` of sql/queries/webhooks.sql, or nothing without a version."""
    if not tmap.version:
        return sql.SQL("")
    return SQL.compose(name, version=tmap.column_of(tmap.version))


async def _upsert(conn: asyncpg.Connection, side: Side, tmap: TopicMap,
                  mapped: MappedEvent) -> bool:
    """Insert or update the event's row; False when the stored row is newer (stale)."""
    cols = list(mapped.row)
    rest = [c for c in cols if c not in mapped.key] or list(mapped.key)[:1]
    sets = sql.SQL(", ").join(sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
                              for c in rest)
    stmt = SQL.render("upsert", table=(side.schema, side.table), cols=_ids(*cols),
                      keys=_ids(*mapped.key), sets=sets, guard=_guard("upsert_guard", tmap))
    return await conn.fetchval(stmt, json.dumps(mapped.row)) is not None


async def _delete(conn: asyncpg.Connection, side: Side, tmap: TopicMap,
                  mapped: MappedEvent) -> bool:
    """Delete the event's row; False when a newer version of it is stored (stale)."""
    match = sql.SQL(" and ").join(sql.SQL("cur.{c} = ev.{c}").format(c=sql.Identifier(c))
                                  for c in mapped.key)
    stmt = SQL.render("delete", table=(side.schema, side.table), match=match,
                      guard=_guard("delete_guard", tmap))
    return not await conn.fetchval(stmt, json.dumps(mapped.row))


async def _finish(hconn: asyncpg.Connection, events: list[asyncpg.Record],
                  out: _Outcomes) -> None:
    """Dead letters, counters and the claimed rows' deletion, in the hub transaction."""
    if out.dead:
        cols: list[list[Any]] = [[], [], [], [], [], []]
        for ev, error in out.dead:
            for col, value in zip(cols, (ev["link"], ev["side"], ev["source"], ev["event_id"],
                                         error, ev["payload"]), strict=True):
                col.append(value)
            # the error may quote row values (PII): it goes to sync.dead_letter, not the log
            log.warning("source=%s event=%s dead-lettered, see sync.dead_letter", ev["source"],
                        ev["event_id"])
        await hconn.execute(SQL["dead_letter"], *cols)
    dead = Counter(ev["source"] for ev, _ in out.dead)
    sources = sorted(set(out.applied) | set(out.stale) | set(dead))
    await hconn.execute(SQL["count"], sources, [out.applied[s] for s in sources],
                        [out.stale[s] for s in sources], [dead[s] for s in sources])
    await hconn.execute(SQL["delete_claimed"], [ev["id"] for ev in events])


async def prune_webhook_events(hub: asyncpg.Pool, config: Config) -> int:
    """Forget dedupe records past [webhooks] retention_days; call it hourly or so."""
    days = parse_webhooks(config, secrets=False).retention_days
    async with hub.acquire() as conn:
        return await conn.fetchval(SQL["prune"], days)
