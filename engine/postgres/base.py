"""Base images for two-way links: what `install` and `adopt` record in sync.row_state.

A two-way link decides "who changed this row" against the image last synced.
Rows that existed before `install` were never synced, so without this step the
first edit of each would be judged against nothing. Seeding reads both tables
page by page (keyset, never OFFSET) in the bridge's pinned session settings and
records, on both peers:
- every row whose two sides are equal: a known base (its current image);
- every key whose sides differ or that exists on one side only: an unknown
  base. Such a row takes the incoming change (never a conflict) and the keys
  are reported, so the operator settles them with `check` and `repair`.
A base the bridge wrote after the seeding started is never overwritten, and an
unknown entry never replaces a base that exists, so seeding is safe to re-run
and to run beside a running bridge.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config
from syncbridge.engine.postgres import session as pg_session
from syncbridge.engine.postgres.drain import Q
from syncbridge.engine.postgres.sql import _q, _table, key_coldefs, text_obj, typed_obj

PAGE = 2000
SHOWN = 10  # differing keys named in the report


@dataclass
class Seeded:
    link: str
    equal: int = 0
    differing: list[str] = field(default_factory=list)  # a-named key texts

    def report(self) -> str:
        text = f"{self.link}: base recorded for {self.equal} equal row(s)"
        if not self.differing:
            return text
        shown = ", ".join(self.differing[:SHOWN])
        more = f" (and {len(self.differing) - SHOWN} more)" if len(self.differing) > SHOWN else ""
        return (f"{text}; {len(self.differing)} key(s) differ between the sides or exist on one "
                f"side only: {shown}{more}. Their next change is applied as it comes (no "
                f"conflict); to settle them now run `syncbridge check {self.link}` then "
                f"`syncbridge repair {self.link} --prefer a|b`")


class _Side:
    """Seeding statements of one side of a link."""

    def __init__(self, shape: LinkShape, side: str) -> None:
        other = "b" if side == "a" else "a"
        keys = shape.key_cols(side)
        order = ", ".join(f"t.{_q(k)}" for k in keys)
        row = f"select {typed_obj(shape.key_cols('a'), 't', keys)}::text as ka, " \
              f"{typed_obj(shape.key_cols(other), 't', keys)}::text as other_key, " \
              f"{text_obj(shape.cols('a'), 't', shape.cols(side))}::text as image, " \
              f"{typed_obj(keys, 't', keys)}::text as own_key " \
              f"from {_table(shape, side)} t "
        after = ", ".join(f"p.{_q(k)}" for k in keys)
        self.first = f"{row} order by {order} limit %s"
        self.next = (f"{row}, jsonb_populate_record(null::{_table(shape, side)}, %s::jsonb) p "
                     f"where ({order}) > ({after}) order by {order} limit %s")
        join = " and ".join(f"t.{_q(k)} = k.{_q(k)}" for k in keys)
        self.lookup = (f"select {typed_obj(shape.key_cols('a'), 't', keys)}::text as ka, "
                       f"{text_obj(shape.cols('a'), 't', shape.cols(side))}::text as image "
                       f"from jsonb_to_recordset(%s::jsonb) as k({key_coldefs(shape, side)}) "
                       f"join {_table(shape, side)} t on {join}")


def _connect(config: Config, peer: str) -> psycopg.Connection:
    return pg_session.connect(config.peers[peer].dsn)


def _pages(conn: psycopg.Connection, side: _Side) -> Iterator[list]:
    """Pages of (a-named key, key in the other side's names, image, own key) in key order."""
    rows = conn.execute(side.first, (PAGE,)).fetchall()
    while rows:
        yield rows
        if len(rows) < PAGE:
            return
        rows = conn.execute(side.next, (rows[-1][3], PAGE)).fetchall()


def seed(config: Config, shape: LinkShape) -> Seeded:
    """Record base images for one two-way Postgres link; returns what it found."""
    link = shape.link
    out = Seeded(link.name)
    peers = {link.a.peer, link.b.peer}
    conns = {p: _connect(config, p) for p in peers}
    try:
        start = {p: c.execute("select clock_timestamp()").fetchone()[0]
                 for p, c in conns.items()}
        sides = {s: _Side(shape, s) for s in ("a", "b")}
        ca, cb = conns[link.a.peer], conns[link.b.peer]
        for rows in _pages(ca, sides["a"]):
            found = {r[0]: r[1] for r in cb.execute(
                sides["b"].lookup, (_array(r[1] for r in rows),)).fetchall()}
            entries = []
            for ka, _okey, image, _own in rows:
                same = found.get(ka) == image
                entries.append(_entry(ka, image if same else "null", same))
                if same:
                    out.equal += 1
                else:
                    out.differing.append(ka)
            _write(conns, link.name, entries, start)
        for rows in _pages(cb, sides["b"]):
            there = {r[0] for r in ca.execute(
                sides["a"].lookup, (_array(r[1] for r in rows),)).fetchall()}
            entries = [_entry(ka, "null", False) for ka, *_ in rows if ka not in there]
            out.differing.extend(ka for ka, *_ in rows if ka not in there)
            _write(conns, link.name, entries, start)
        return out
    finally:
        for c in conns.values():
            c.close()


def _array(texts: Iterable[str]) -> str:
    """A JSON array of JSON texts. Keys and images stay texts: parsing them in Python
    would turn a numeric key 0.12345678901234567890123 into a float."""
    return "[" + ",".join(texts) + "]"


def _entry(key: str, image: str, known: bool) -> str:
    return f'{{"key":{key},"image":{image},"known":{"true" if known else "false"}}}'


def _write(conns: dict[str, psycopg.Connection], link: str, entries: list[str],
           start: dict) -> None:
    if not entries:
        return
    payload = _array(entries)
    for peer, conn in conns.items():
        conn.execute(sqlfiles.for_psycopg(Q("seed_state")), (link, payload, start[peer]))
