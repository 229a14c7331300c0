"""Install and remove Postgres capture triggers for the links of a config.

One plpgsql function per (link, side) rendered from sql/postgres/capture.sql
and four statement-level triggers (transition tables allow one event per
trigger), all named after the link so uninstall finds exactly what install made.
The link's `truncate` option picks the TRUNCATE branch (queue it, ignore it, or
refuse the statement), so a change of that option takes effect at `install`.
"""

from __future__ import annotations

import zlib

import psycopg
from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape, quote_qualified, table_identifier
from syncbridge.engine.config import Link
from syncbridge.engine.postgres import sql as pg_sql

SQL = sqlfiles.Queries("postgres/capture.sql")
NOTIFY_CHANNEL = "syncbridge"
WAKE_LOCK_CLASS = 0x73796E63  # first key of the two-key advisory locks syncbridge takes ("sync")
_EVENTS = {
    "ins": ("INSERT", "referencing new table as new_rows"),
    "upd": ("UPDATE", "referencing old table as old_rows new table as new_rows"),
    "del": ("DELETE", "referencing old table as old_rows"),
    "trn": ("TRUNCATE", ""),
}


def function_name(link: Link, side: str) -> str:
    return f"capture_{link.name}_{side}"


def origin_tag(link: Link, source_side: str) -> str:
    """The origin the bridge sets when applying changes that came from source_side."""
    return f"{link.name}:{source_side}"


def wake_lock(link_name: str, side: str) -> tuple[int, int]:
    """The two int4 keys of one link side's wake lock (sql/postgres/capture.sql notify).

    The bridge holds it while it sleeps on LISTEN; a writer notifies only then. Two keys
    keep it apart from the one-key locks of the hub's leases (engine/hub/lease.py). Two
    sides that hash alike only cost extra wake-ups or polls, never a missed one: a
    writer that finds the lock held notifies, a bridge that cannot take it polls."""
    key = zlib.crc32(f"{link_name}:{side}".encode())
    return WAKE_LOCK_CLASS, key - (1 << 32) if key >= 1 << 31 else key


def render_function(shape: LinkShape, side: str) -> sql.Composed:
    """The capture function of one link side (sql/postgres/capture.sql)."""
    link = shape.link
    other = "b" if side == "a" else "a"
    keys = shape.key_cols(side)
    lock_class, lock_key = wake_lock(link.name, side)
    notify = (
        SQL.compose("notify", lock_class=sql.Literal(lock_class),
                    lock_key=sql.Literal(lock_key), channel=sql.Literal(NOTIFY_CHANNEL),
                    payload=sql.Literal(f"{link.name}:{side}"))
        if link.notify
        else sql.SQL("")
    )
    return SQL.compose(
        "function",
        fn=function_name(link, side),
        echo=sql.Literal(origin_tag(link, other)),
        link=sql.Literal(link.name),
        side=sql.Literal(side),
        key_new=pg_sql.typed_obj(keys, "n", keys),
        key_old=pg_sql.typed_obj(keys, "o", keys),
        notify=notify,
        truncate=SQL.compose(f"truncate_{link.truncate}", link=sql.Literal(link.name),
                             side=sql.Literal(side)),
    )


def _trigger(link: Link, side: str, event: str) -> str:
    return f"syncbridge_{link.name}_{side}_{event}"


def trigger_names(link: Link, side: str) -> list[str]:
    """The capture triggers `install` creates on one link side's table (doctor checks them)."""
    return [_trigger(link, side, event) for event in _EVENTS]


def install(conn: psycopg.Connection, shape: LinkShape, side: str) -> None:
    """Create (or replace) the capture function and triggers of one link side."""
    link = shape.link
    table = table_identifier(link.side(side))
    conn.execute(render_function(shape, side))
    for event, (verb, referencing) in _EVENTS.items():
        trigger = _trigger(link, side, event)
        conn.execute(SQL.compose("drop_trigger", trigger=trigger, table=table))
        conn.execute(SQL.compose("create_trigger", trigger=trigger, verb=sql.SQL(verb),
                                 table=table, referencing=sql.SQL(referencing),
                                 fn=function_name(link, side)))


def uninstall(conn: psycopg.Connection, shape_or_link: LinkShape | Link, side: str) -> None:
    link = shape_or_link.link if isinstance(shape_or_link, LinkShape) else shape_or_link
    s = link.side(side)
    exists = conn.execute(SQL["table_exists"], (quote_qualified(s),)).fetchone()
    if exists and exists[0]:
        for event in _EVENTS:
            conn.execute(SQL.compose("drop_trigger", trigger=_trigger(link, side, event),
                                     table=table_identifier(s)))
    conn.execute(SQL.compose("drop_function", fn=function_name(link, side)))
