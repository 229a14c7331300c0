"""What the databases say about linked tables, and the link checks built on it.

Validation runs against both catalogs before anything starts, so a typo in the
config is one clear error naming the link, the peer and the column, never a
runtime failure halfway through a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError, Link, Side


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as the database spells it: format_type() on Postgres
    nullable: bool


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


PG_TABLE_SQL = """
select a.attname, format_type(a.atttypid, a.atttypmod), not a.attnotnull
  from pg_attribute a
 where a.attrelid = to_regclass(%(qualified)s) and a.attnum > 0 and not a.attisdropped
   and a.attgenerated = ''
 order by a.attnum
"""
PG_PK_SQL = """
select a.attname
  from pg_index i
  join lateral unnest(i.indkey) with ordinality k(attnum, ord) on true
  join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
 where i.indrelid = to_regclass(%(qualified)s) and i.indisprimary
 order by k.ord
"""


def quote_qualified(side: Side) -> str:
    def q(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'

    return f"{q(side.schema)}.{q(side.table)}"


def read_pg_table(conn, side: Side) -> Table | None:
    """Catalog facts of one Postgres table via a psycopg connection; None if absent."""
    qualified = quote_qualified(side)
    rows = conn.execute(PG_TABLE_SQL, {"qualified": qualified}).fetchall()
    if not rows:
        return None
    pk = tuple(r[0] for r in conn.execute(PG_PK_SQL, {"qualified": qualified}).fetchall())
    cols = {r[0]: Column(r[0], r[1], r[2]) for r in rows}
    return Table(side.schema, side.table, cols, pk)


# Postgres types that carry the same values, so a→b never loses anything.
_WIDENS = {
    "smallint": {"smallint", "integer", "bigint", "numeric"},
    "integer": {"integer", "bigint", "numeric"},
    "bigint": {"bigint", "numeric"},
    "real": {"real", "double precision"},
    "character varying": {"text", "character varying"},
    "text": {"text", "character varying"},
    "json": {"json", "jsonb"},
    "jsonb": {"jsonb", "json"},
}


def base_type(t: str) -> str:
    return t.split("(")[0].removesuffix("[]").strip()


def compatible(src: str, dst: str) -> bool:
    """True when every value of src type stores exactly in dst type."""
    if src == dst:
        return True
    bs, bd = base_type(src), base_type(dst)
    if src.endswith("[]") != dst.endswith("[]"):
        return False
    if bs == bd == "numeric":
        return dst == "numeric" or src != "numeric" and _numeric_fits(src, dst)
    if bs == bd == "character varying":
        return dst == "character varying" or src != "character varying" and _len(src) <= _len(dst)
    return bd in _WIDENS.get(bs, set()) and not (bd == "character varying" and "(" in dst)


def _numeric_fits(src: str, dst: str) -> bool:
    (ps, ss), (pd, sd) = _prec(src), _prec(dst)
    return ss <= sd and ps - ss <= pd - sd


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
        if not check_types(a.columns[ca].type, b.columns[cb].type):
            raise ConfigError(
                f"link {link.name!r}: column {ca} ({a.columns[ca].type}) on peer {link.a.peer!r} "
                f"and column {cb} ({b.columns[cb].type}) on peer {link.b.peer!r} "
                "have incompatible types"
            )
        if link.direction != "a_to_b" and not check_types(b.columns[cb].type, a.columns[ca].type):
            raise ConfigError(
                f"link {link.name!r}: column {cb} ({b.columns[cb].type}) on peer {link.b.peer!r} "
                f"does not fit column {ca} ({a.columns[ca].type}) on peer {link.a.peer!r} "
                "for the b→a direction"
            )
    keys_b = tuple(cb for _, cb in pairs[: len(link.key)])
    if set(link.key) != set(a.pk) or set(keys_b) != set(b.pk):
        raise ConfigError(
            f"link {link.name!r}: key {list(link.key)} must be the primary key of both tables "
            f"(peer {link.a.peer!r} has {list(a.pk)}, peer {link.b.peer!r} has {list(b.pk)}, "
            f"key maps to {list(keys_b)})"
        )
    return LinkShape(link, a, b, tuple(pairs))


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
