"""Named SQL loaded once from the package's sql/ folder.

Runtime SQL lives in `.sql` files so it can be read, diffed and run by hand;
each entry starts with a `-- name: NAME` line followed by a one-line
description comment (procrastinate's layout).

One loader, one convention: a module binds its file once,
`SQL = sqlfiles.Queries("postgres/drain.sql")`, then uses `SQL["claim"]` for a
fixed statement and `SQL.render("upsert", table=..., cols=...)` for a per-link
template, whose `{fields}` are filled by psycopg.sql (so identifiers are always
quoted by psycopg; literal braces in a template are written `{{` `}}`).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from psycopg import sql

_ENTRY = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def text(relpath: str) -> str:
    """The whole text of sql/<relpath>, e.g. text('postgres/capture.sql')."""
    node = resources.files("syncbridge.sql")
    for part in relpath.split("/"):
        node = node / part
    return node.read_text(encoding="utf-8")


@functools.cache
def queries(relpath: str) -> dict[str, str]:
    """{name: sql} for every `-- name:` entry in sql/<relpath>."""
    body = text(relpath)
    found: dict[str, str] = {}
    matches = list(_ENTRY.finditer(body))
    for m, nxt in zip(matches, [*matches[1:], None], strict=True):
        chunk = body[m.end(): nxt.start() if nxt else len(body)].strip()
        found[m.group(1)] = chunk
    if not found:
        raise ValueError(f"sql/{relpath} has no '-- name:' entries")
    return found


def query(relpath: str, name: str) -> str:
    try:
        return queries(relpath)[name]
    except KeyError:
        raise KeyError(f"no query {name!r} in sql/{relpath}") from None


def for_psycopg(query: str) -> str:
    """An asyncpg-style statement ($1, $2 ... each used once, in order) for psycopg (%s)."""
    for n in range(9, 0, -1):
        query = query.replace(f"${n}", "%s")
    return query


def _part(value: sql.Composable | str | tuple[str, ...]) -> sql.Composable:
    """A template field: a str is one identifier, a tuple a qualified one."""
    if isinstance(value, sql.Composable):
        return value
    if isinstance(value, tuple):
        return sql.Identifier(*value)
    return sql.Identifier(value)


class Queries:
    """The named statements of one file under sql/ (see the module docstring)."""

    def __init__(self, relpath: str) -> None:
        self.relpath = relpath

    def __getitem__(self, name: str) -> str:
        return query(self.relpath, name)

    def compose(self, name: str, **fields: sql.Composable | str | tuple[str, ...]
                ) -> sql.Composed:
        """The template `name` with its fields filled, as a psycopg Composed."""
        return sql.SQL(self[name]).format(**{k: _part(v) for k, v in fields.items()})

    def render(self, name: str, **fields: sql.Composable | str | tuple[str, ...]) -> str:
        """The template `name` with its fields filled, as text for asyncpg or pyodbc."""
        return self.compose(name, **fields).as_string(None)
