"""The two sides of a link as `check` reads them: statements rendered once per side,
and reads bounded to WORKERS concurrent queries per side (so a check never takes
more than a few connections from a production database)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.postgres import sql as pg_sql
from syncbridge.engine.reconcile import canonical

SQL = sqlfiles.Queries("queries/reconcile.sql")

WORKERS = 4  # concurrent range queries per side


def _cols(names: list[str]) -> list[sql.Composable]:
    """t."name" for each column: every statement reads the table under the alias t."""
    return [sql.SQL("t.{}").format(sql.Identifier(n)) for n in names]


def _join(parts: list[sql.Composable], sep: str = ", ") -> sql.Composed:
    return sql.SQL(sep).join(parts)


class SideSql:
    """Check statements of one link side, rendered once (a range's bounds are parameters)."""

    def __init__(self, shape: LinkShape, side: str) -> None:
        s = shape.link.side(side)
        table = shape.table(side)
        classes = [canonical.pair_class(shape.a.columns[ca].type, shape.b.columns[cb].type)
                   for ca, cb in shape.pairs]
        self.side = side
        self.cols = shape.cols(side)
        self.keys = shape.key_cols(side)
        self.key_types = [table.columns[k].type for k in self.keys]
        # both sides are Postgres here (a SQL Server side is refused by check_all): exact texts
        fields = [(c.as_string(None), canonical.EXACT) for c in _cols(self.cols)]
        # a source side is compared as the link reads it (its filter, its transforms);
        # the sink side of a one-way link is its whole table (docs/filters.md)
        self.table = pg_sql.source_rows(shape, side)
        self.row = sql.SQL(canonical.pg_row(fields))
        self.ckey = sql.SQL(canonical.pg_row(fields[: len(self.keys)]))
        self.fields = sql.SQL(", ".join(canonical.pg_field(c, k) for c, k in fields))
        self.key_cols_t = _join(_cols(self.keys))
        self.key_obj = sql.SQL("jsonb_build_object({})").format(_join([
            sql.SQL("{}, {}").format(sql.Literal(k), c)
            for k, c in zip(self.keys, _cols(self.keys), strict=True)]))
        self.int_key = len(self.keys) == 1 and classes[0] == "int"
        self.span = SQL.render("key_span", key=self.keys[0], table=self.table,
                               table_literal=sql.Literal(sql.Identifier(s.schema, s.table)
                                                         .as_string(None)))
        self.count_rows = SQL.render("count_rows", table=self.table, where=sql.SQL(""))
        self._cache: dict[tuple[str, bool, bool], str] = {}

    def where(self, lo: bool, hi: bool) -> sql.Composable:
        """(lo, hi] over the key as a row comparison; bounds are text params cast back."""
        parts, n = [], 1
        for present, op in ((lo, ">"), (hi, "<=")):
            if present:
                vals = _join([sql.SQL("${}::text::{}").format(sql.SQL(str(n + i)), sql.SQL(t))
                              for i, t in enumerate(self.key_types)])
                parts.append(sql.SQL("({}) {} ({})").format(self.key_cols_t, sql.SQL(op), vals))
                n += len(self.keys)
        return sql.SQL("where ") + _join(parts, " and ") if parts else sql.SQL("")

    def stmt(self, name: str, lo: bool, hi: bool, step: int = 0) -> str:
        """A range statement: chunk_checksum, leaf_rows, or boundaries every step-th key."""
        if name == "boundaries":
            return SQL.render(name, table=self.table, where=self.where(lo, hi),
                              key_cols=self.key_cols_t, step=sql.Literal(int(step)),
                              key_text=_join([sql.SQL("{}::text").format(c)
                                              for c in _cols(self.keys)]))
        key = (name, lo, hi)
        if key not in self._cache:
            self._cache[key] = SQL.render(
                name, table=self.table, where=self.where(lo, hi), row=self.row,
                hash64=sql.SQL(canonical.pg_row_hash64(self.row.as_string(None))),
                ckey=self.ckey, key_obj=self.key_obj)
        return self._cache[key]

    def by_keys(self) -> str:
        """The rows with the keys of a jsonb array, as per-column canonical texts."""
        if ("by_keys", False, False) not in self._cache:
            defs = _join([sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(t))
                          for k, t in zip(self.keys, self.key_types, strict=True)])
            join = _join([sql.SQL("t.{} = k.{}").format(sql.Identifier(k), sql.Identifier(k))
                          for k in self.keys], " and ")
            self._cache[("by_keys", False, False)] = SQL.render(
                "rows_by_keys", table=self.table, ckey=self.ckey, key_obj=self.key_obj,
                fields=self.fields, key_defs=defs, key_join=join)
        return self._cache[("by_keys", False, False)]


class Sides:
    """Both sides of one link: pools (side -> asyncpg pool), statements, bounded reads."""

    def __init__(self, shape: LinkShape, pools: dict[str, asyncpg.Pool]) -> None:
        self.shape = shape
        self.link = shape.link
        self.pools = pools
        self.sql = {s: SideSql(shape, s) for s in ("a", "b")}
        self.sem = {s: asyncio.Semaphore(WORKERS) for s in ("a", "b")}

    async def fetch(self, side: str, stmt: str, *args: Any) -> list[asyncpg.Record]:
        async with self.sem[side]:
            return await self.pools[side].fetch(stmt, *args)

    async def count(self, side: str) -> int:
        """All rows of a side's table (a recount after counts read mid-flight)."""
        return await self.pools[side].fetchval(self.sql[side].count_rows)
