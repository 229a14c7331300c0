"""What `install` checks and prepares for two-way links, beyond capture.

- base images for the rows that already exist (engine/postgres/base.py);
- key ranges: a key filled from a sequence or identity on both sides hands out
  the same values on both, so two inserts meet as an insert/insert conflict.
  `install` warns, naming the columns; `--fix-sequences` makes them disjoint
  (side a odd, side b even), which is the remedy for existing integer keys;
- user triggers on a sink table fire on the bridge's writes too (a "touch
  updated_at" trigger then makes every synced row differ again): `install`
  warns and names the setting that lets them skip the bridge's writes.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape, quote_qualified
from syncbridge.engine.config import Config
from syncbridge.engine.postgres import sql as pg_sql

SQL = sqlfiles.Queries("postgres/two_way.sql")
SKIP_BRIDGE = ("if current_setting('syncbridge.origin', true) <> '' then return new; end if;")


def _sequence(conn: psycopg.Connection, table: str, column: str) -> tuple | None:
    row = conn.execute(SQL["sequence_of"], {"table": table, "column": column}).fetchone()
    return tuple(row) if row else None


def _regclass(shape: LinkShape, side: str) -> str:
    """A side's table as text for a ::regclass parameter."""
    return quote_qualified(shape.link.side(side))


def _overlap(a: tuple, b: tuple) -> bool:
    """Two sequences may hand out the same value: same residues, overlapping ranges."""
    inc_a, start_a, min_a, max_a, _ = a
    inc_b, start_b, min_b, max_b, _ = b
    if max(min_a, min_b) > min(max_a, max_b):
        return False
    return not (inc_a == inc_b and abs(inc_a) > 1 and start_a % inc_a != start_b % inc_b)


def key_ranges(config: Config, shape: LinkShape, fix: bool) -> Iterator[str]:
    """Warn about (or, with fix, separate) key sequences that overlap across the sides."""
    link = shape.link
    if len(shape.key_cols("a")) != 1:
        return
    col = {s: shape.key_cols(s)[0] for s in ("a", "b")}
    conns = {s: psycopg.connect(config.peers[link.side(s).peer].dsn, autocommit=True)
             for s in ("a", "b")}
    try:
        seqs = {s: _sequence(conns[s], _regclass(shape, s), col[s]) for s in ("a", "b")}
        if not (seqs["a"] and seqs["b"] and _overlap(seqs["a"], seqs["b"])):
            return
        if not fix:
            yield (f"warning: {link.name}: key column {col['a']} on {link.a.peer} and "
                   f"{col['b']} on {link.b.peer} are both filled from sequences whose ranges "
                   "overlap, so an insert on each side can pick the same key (an insert/insert "
                   "conflict). Remedy: `syncbridge install --fix-sequences` (side a odd, side b "
                   "even), disjoint ranges, or uuid keys")
            return
        top = max(conns[s].execute(SQL.compose(
            "key_top", column=col[s], table=pg_sql.table_name(shape, s))).fetchone()[0]
            for s in ("a", "b"))
        for s, parity in (("a", 1), ("b", 0)):
            restart = top + 1 + ((top + 1) % 2 != parity)
            _restart(conns[s], shape, s, col[s], seqs[s][4], restart)
            yield (f"{link.name}: sequence of {col[s]} on {link.side(s).peer} now hands out "
                   f"{'odd' if parity else 'even'} values from {restart} (increment 2)")
    finally:
        for c in conns.values():
            c.close()


def _restart(conn: psycopg.Connection, shape: LinkShape, side: str, column: str,
             identity: bool, restart: int) -> None:
    """Restart a key's identity or serial sequence at `restart`, stepping by 2."""
    value = sql.Literal(restart)
    if identity:
        conn.execute(SQL.compose("identity_restart", table=pg_sql.table_name(shape, side),
                                 column=column, restart=value))
        return
    seq = conn.execute(SQL["serial_sequence"], (_regclass(shape, side), column)).fetchone()
    conn.execute(SQL.compose("sequence_restart", sequence=(seq[0], seq[1]), restart=value))


def user_triggers(config: Config, shape: LinkShape) -> Iterator[str]:
    """Warn about triggers of the user's own on the sink tables of a link."""
    for _src, dst in shape.link.directions():
        s = shape.link.side(dst)
        if config.peers[s.peer].dialect != "postgres":
            continue
        with psycopg.connect(config.peers[s.peer].dsn, autocommit=True) as conn:
            names = [r[0] for r in conn.execute(SQL["user_triggers"], (_regclass(shape, dst),))]
        if names:
            yield (f"warning: {shape.link.name}: {s.qualified} on {s.peer} has trigger(s) "
                   f"{', '.join(names)} that also fire on the bridge's writes; if one changes "
                   f"the row (e.g. touches updated_at), start it with `{SKIP_BRIDGE}`")
