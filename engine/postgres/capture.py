"""Install and remove Postgres capture triggers for the links of a config.

One plpgsql function per (link, side) rendered from sql/postgres/capture.sql
and four statement-level triggers (transition tables allow one event per
trigger), all named after the link so uninstall finds exactly what install made.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Link

NOTIFY_CHANNEL = "syncbridge"
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


def _key_expr(cols: list[str], alias: str) -> sql.Composable:
    args = sql.SQL(", ").join(
        sql.SQL("{}, {}.{}").format(sql.Literal(c), sql.Identifier(alias), sql.Identifier(c))
        for c in cols
    )
    return sql.SQL("jsonb_build_object({})").format(args)


def render_function(shape: LinkShape, side: str) -> sql.Composed:
    link = shape.link
    other = "b" if side == "a" else "a"
    keys = shape.key_cols(side)
    notify = (
        sql.SQL("perform pg_notify({}, {});").format(
            sql.Literal(NOTIFY_CHANNEL), sql.Literal(f"{link.name}:{side}")
        )
        if link.notify
        else sql.SQL("")
    )
    return sql.SQL(sqlfiles.text("postgres/capture.sql")).format(
        fn=sql.Identifier(function_name(link, side)),
        echo=sql.Literal(origin_tag(link, other)),
        link=sql.Literal(link.name),
        side=sql.Literal(side),
        key_new=_key_expr(keys, "n"),
        key_old=_key_expr(keys, "o"),
        notify=notify,
    )


def _table(shape: LinkShape, side: str) -> sql.Composed:
    s = shape.link.side(side)
    return sql.SQL("{}.{}").format(sql.Identifier(s.schema), sql.Identifier(s.table))


def _trigger(link: Link, side: str, event: str) -> sql.Identifier:
    return sql.Identifier(f"syncbridge_{link.name}_{side}_{event}")


def install(conn: psycopg.Connection, shape: LinkShape, side: str) -> None:
    """Create (or replace) the capture function and triggers of one link side."""
    link = shape.link
    table = _table(shape, side)
    conn.execute(render_function(shape, side))
    for event, (verb, referencing) in _EVENTS.items():
        level = "statement"
        conn.execute(sql.SQL("drop trigger if exists {} on {}").format(
            _trigger(link, side, event), table))
        conn.execute(sql.SQL(
            "create trigger {} after {} on {} {} for each {} execute function sync.{}()"
        ).format(
            _trigger(link, side, event), sql.SQL(verb), table, sql.SQL(referencing),
            sql.SQL(level), sql.Identifier(function_name(link, side)),
        ))


def uninstall(conn: psycopg.Connection, shape_or_link: LinkShape | Link, side: str) -> None:
    link = shape_or_link.link if isinstance(shape_or_link, LinkShape) else shape_or_link
    s = link.side(side)
    table = sql.SQL("{}.{}").format(sql.Identifier(s.schema), sql.Identifier(s.table))
    exists = conn.execute("select to_regclass(%s)", (f'"{s.schema}"."{s.table}"',)).fetchone()
    if exists and exists[0]:
        for event in _EVENTS:
            conn.execute(sql.SQL("drop trigger if exists {} on {}").format(
                _trigger(link, side, event), table))
    conn.execute(sql.SQL("drop function if exists sync.{}()").format(
        sql.Identifier(function_name(link, side))))
