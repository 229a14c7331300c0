"""`syncbridge status`: sync.status as a table; it computes nothing itself.

It renders whatever columns the view has. By default it shows the ones an
operator looks at first (`NARROW`, those the view has) in at most 100
columns; `--wide` shows every column. rich draws the table (plain text when
not on a terminal) and `--watch` redraws it in place.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from io import StringIO

from rich import box
from rich.console import Console
from rich.table import Table

from syncbridge.engine import sqlfiles
from syncbridge.engine.postgres import session as pg_session

SQL = sqlfiles.Queries("queries/status.sql")

WIDTH = 100  # characters: the default table fits an 100-column terminal
NARROW = ("link", "direction", "state", "queued", "lag", "applied_last_minute",
          "dead_letters", "open_conflicts", "last_error")
_SHORT = {"applied_last_minute": "/min", "dead_letters": "dead",
          "open_conflicts": "confl", "direction": "dir"}
# widest cell of each default column: together (2 spaces apart) at most WIDTH characters
_MAX_NARROW = {"link": 24, "direction": 6, "state": 10, "queued": 8, "lag": 6,
               "applied_last_minute": 6, "dead_letters": 5, "open_conflicts": 5,
               "last_error": 14}
MAX_CELL = 60  # characters of one cell in --wide


def rows(dsn: str) -> tuple[list[str], list[tuple]]:
    with pg_session.connect(dsn) as conn:  # the hub's own DateStyle may be one psycopg can't read
        cur = conn.execute(SQL["status_all"])
        return [d.name for d in cur.description], cur.fetchall()


def cell(v: object, limit: int = MAX_CELL) -> str:
    if v is None:
        return "-"
    if isinstance(v, dt.timedelta):
        text = _interval(v)
    elif isinstance(v, dt.datetime):
        text = v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    elif isinstance(v, float | Decimal):
        text = f"{v:.2f}"
    else:
        text = " ".join(str(v).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _interval(v: dt.timedelta) -> str:
    s = v.total_seconds()
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{s / 60:.1f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def table(headers: list[str], data: list[tuple], wide: bool = False) -> Table:
    keep = list(range(len(headers))) if wide else [
        i for i, h in enumerate(headers) if h in NARROW]
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1),
              collapse_padding=True)
    for i in keep:
        name = headers[i] if wide else _SHORT.get(headers[i], headers[i])
        t.add_column(name, overflow="ellipsis", no_wrap=True,
                     max_width=None if wide else _MAX_NARROW.get(headers[i], 12))
    for r in data:
        t.add_row(*(cell(r[i]) for i in keep))
    return t


def render(dsn: str, wide: bool = False) -> str:
    headers, data = rows(dsn)
    out = to_text(table(headers, data, wide), wide)
    return out + ("\n(no link has been drained yet)" if not data else "")


def to_text(t: Table, wide: bool) -> str:
    buf = StringIO()
    width = 10_000 if wide else WIDTH
    Console(file=buf, width=width, color_system=None, legacy_windows=False).print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


def watch(dsn: str, every: float, wide: bool = False) -> int:
    """Redraw the table every `every` seconds until interrupted (Ctrl-C exits 0)."""
    from rich.live import Live

    console = Console()
    try:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                headers, data = rows(dsn)
                live.update(table(headers, data, wide), refresh=True)
                time.sleep(every)
    except KeyboardInterrupt:
        return 0
