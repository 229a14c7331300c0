"""`syncbridge status`: sync.status as a table; it computes nothing itself."""

from __future__ import annotations

import psycopg

from . import sqlfiles


def rows(dsn: str) -> tuple[list[str], list[tuple]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(sqlfiles.query("queries/status.sql", "status"))
        return [d.name for d in cur.description], cur.fetchall()


def _cell(v: object) -> str:
    if v is None:
        return "-"
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def table(headers: list[str], data: list[tuple]) -> str:
    cells = [headers] + [[_cell(v) for v in r] for r in data]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(dsn: str) -> str:
    headers, data = rows(dsn)
    if not data:
        return table(headers, []) + "\n(no link has been drained yet)"
    return table(headers, data)
