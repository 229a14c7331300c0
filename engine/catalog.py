"""What the databases say about linked tables, and the link checks built on it.

Validation runs against both catalogs before anything starts, so a typo in the
config is one clear error naming the link, the peer and the column, never a
runtime failure halfway through a batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import ConfigError, Link, Side


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as the database spells it: format_type() on Postgres, user types qualified
    nullable: bool
    domain_of: str | None = None  # a domain's base type (Postgres), None for other types
    definition: str | None = None  # a domain's, composite's or enum's definition (Postgres)

    @property
    def base(self) -> str:
        """The type that decides how values travel: a domain's base type, else the type."""
        return self.domain_of or self.type


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: dict[str, Column]  # in ordinal order
    pk: tuple[str, ...]


@dataclass(frozen=True)
class LinkShape:
    """A validated link: which a column feeds which b column, with both catalogs."""

    link: Link
    a: Table
    b: Table
    pairs: tuple[tuple[str, str], ...]  # (a column, b column), key columns first

    def key_pairs(self) -> tuple[tuple[str, str], ...]:
        return self.pairs[: len(self.link.key)]

    def cols(self, side: str) -> list[str]:
        i = 0 if side == "a" else 1
        return [p[i] for p in self.pairs]

    def key_cols(self, side: str) -> list[str]:
        i = 0 if side == "a" else 1
        return [p[i] for p in self.key_pairs()]

    def table(self, side: str) -> Table:
        return self.a if side == "a" else self.b


SQL = sqlfiles.Queries("postgres/catalog.sql")


def table_identifier(side: Side) -> sql.Identifier:
    """The side's table as one qualified identifier, quoted by psycopg."""
    return sql.Identifier(side.schema, side.table)


def quote_qualified(side: Side) -> str:
    """The side's table as quoted text, for a `::regclass` or `to_regclass` parameter."""
    return table_identifier(side).as_string(None)


def read_pg_table(conn, side: Side) -> Table | None:
    """Catalog facts of one Postgres table via a psycopg connection; None if absent."""
    qualified = quote_qualified(side)
    with conn.transaction():
        conn.execute("set local search_path = pg_catalog")
        # search_path = pg_catalog: format_type() then qualifies every type that is not
        # built in ("public.mood"), as the bridge casts to it under any search_path
        rows = conn.execute(SQL["table_columns"], {"qualified": qualified}).fetchall()
        pk = tuple(r[0] for r in conn.execute(SQL["primary_key"], {"qualified": qualified}))
    if not rows:
        return None
    cols = {r[0]: Column(r[0], r[1], r[2], r[3], r[4]) for r in rows}
    return Table(side.schema, side.table, cols, pk)


# Postgres types whose every value the wider type stores with the same text, so a
# value arrives exactly as it was written (rows travel as text, see pg_sql).
# json and jsonb are not interchangeable: jsonb drops json's key order, duplicate
# keys and spacing, and json's text of a jsonb value is not the json written.
_WIDENS = {
    "smallint": {"smallint", "integer", "bigint", "numeric"},
    "integer": {"integer", "bigint", "numeric"},
    "bigint": {"bigint", "numeric"},
    "real": {"real", "double precision"},
    "character varying": {"text", "character varying"},
    "text": {"text", "character varying"},
}


def base_type(t: str) -> str:
    return t.split("(")[0].removesuffix("[]").strip()


def compatible(src: str, dst: str) -> bool:
    """True when every value of src type stores in dst type with the same text."""
    return why_not(src, dst) is None


_PRECISION_TYPES = {"timestamp without time zone", "timestamp with time zone",
                    "time without time zone", "time with time zone", "interval"}
_INT_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}


def why_not(src: str, dst: str) -> str | None:
    """Why a src value would not arrive exactly in a dst column (None: it would)."""
    if src == dst:
        return None
    bs, bd = base_type(src), base_type(dst)
    if src.endswith("[]") != dst.endswith("[]"):
        return "an array and a non-array type"
    if {bs, bd} == {"json", "jsonb"}:
        return ("json keeps its text (key order, duplicate keys, spacing) and jsonb does not: "
                "link json to json and jsonb to jsonb")
    if bs == bd == "numeric":
        if dst == "numeric":
            return None
        if src == "numeric":
            return f"unconstrained numeric does not fit {dst}"
        (ps, ss), (pd, sd) = _prec(src), _prec(dst)
        if ss != sd:
            return f"scale {ss} becomes scale {sd} (1.5 would read back as a different text)"
        return None if ps <= pd else f"{src} has more digits than {dst}"
    if bs in _INT_DIGITS and bd == "numeric" and dst != "numeric":
        p, scale = _prec(dst)
        if scale:
            return f"an integer would gain {scale} decimal places in {dst}"
        return None if _INT_DIGITS[bs] <= p else f"{src} does not fit {dst}"
    unsized = re.sub(r"\(\d+\)", "", src)
    if unsized == re.sub(r"\(\d+\)", "", dst) and unsized in _PRECISION_TYPES:
        # timestamp(3) -> timestamp(6) or timestamp: the same text, more room for digits
        if "(" not in dst:
            return None
        if "(" not in src or _len(src) > _len(dst):
            return f"{src} keeps more fractional digits than {dst}"
        return None
    if bs == bd == "character varying":
        if dst == "character varying":
            return None
        if src == "character varying" or _len(src) > _len(dst):
            return f"{src} values may be longer than {dst}"
        return None
    if bd == "character varying" and "(" in dst and bs in _WIDENS:
        return f"{src} values may be longer than {dst}"
    if bd in _WIDENS.get(bs, set()):
        return None
    return f"{src} values cannot be stored as {dst} with the same text"


def _prec(t: str) -> tuple[int, int]:
    inner = t[t.index("(") + 1: t.index(")")].split(",")
    return int(inner[0]), int(inner[1]) if len(inner) > 1 else 0


def _len(t: str) -> int:
    return int(t[t.index("(") + 1: t.index(")")])


def shape(link: Link, a: Table | None, b: Table | None, check_types=compatible) -> LinkShape:
    """Check one link against both catalogs; raise ConfigError naming what is wrong."""
    for side, table in ((link.a, a), (link.b, b)):
        if table is None:
            raise ConfigError(
                f"link {link.name!r}: table {side.qualified} does not exist on peer {side.peer!r}"
            )
        if not table.pk:
            raise ConfigError(
                f"link {link.name!r}: table {side.qualified} on peer {side.peer!r} "
                "has no primary key"
            )
    assert a is not None and b is not None
    pairs = _pairs(link, a, b)
    for ca, cb in pairs:
        ta, tb = a.columns[ca].type, b.columns[cb].type
        da, db = a.columns[ca].definition, b.columns[cb].definition
        if ta == tb and da != db:
            raise ConfigError(
                f"link {link.name!r}: column {ca} on peer {link.a.peer!r} and column {cb} on "
                f"peer {link.b.peer!r} have type {ta}, defined differently: {da} on "
                f"{link.a.peer!r}, {db} on {link.b.peer!r}; values would not read back alike")
        if link.direction != "b_to_a" and not check_types(ta, tb):
            raise ConfigError(
                f"link {link.name!r}: column {ca} ({ta}) on peer {link.a.peer!r} "
                f"and column {cb} ({tb}) on peer {link.b.peer!r} "
                f"have incompatible types{_reason(check_types, ta, tb)}"
            )
        if link.direction != "a_to_b" and not check_types(tb, ta):
            raise ConfigError(
                f"link {link.name!r}: column {cb} ({tb}) on peer {link.b.peer!r} "
                f"does not fit column {ca} ({ta}) on peer {link.a.peer!r} "
                f"for the b→a direction{_reason(check_types, tb, ta)}"
            )
    keys_b = tuple(cb for _, cb in pairs[: len(link.key)])
    if set(link.key) != set(a.pk) or set(keys_b) != set(b.pk):
        raise ConfigError(
            f"link {link.name!r}: key {list(link.key)} must be the primary key of both tables "
            f"(peer {link.a.peer!r} has {list(a.pk)}, peer {link.b.peer!r} has {list(b.pk)}, "
            f"key maps to {list(keys_b)})"
        )
    return LinkShape(link, a, b, tuple(pairs))


def _reason(check_types, src: str, dst: str) -> str:
    why = why_not(src, dst) if check_types is compatible else None
    return f": {why}" if why else ""


def _pairs(link: Link, a: Table, b: Table) -> list[tuple[str, str]]:
    mapping = link.columns if link.columns is not None else {
        c: c for c in a.columns if c not in link.exclude
    }
    for k in link.key:
        mapping.setdefault(k, k)
    for ca, cb in mapping.items():
        if ca not in a.columns:
            raise ConfigError(
                f"link {link.name!r}: column {ca!r} does not exist in {link.a.qualified} "
                f"on peer {link.a.peer!r}"
            )
        if cb not in b.columns:
            raise ConfigError(
                f"link {link.name!r}: column {cb!r} does not exist in {link.b.qualified} "
                f"on peer {link.b.peer!r}"
            )
    ordered = [(k, mapping[k]) for k in link.key]
    ordered += [(ca, cb) for ca, cb in mapping.items() if ca not in link.key]
    return ordered
