"""`syncbridge check`: are both sides of a link the same, and which keys are not?

Strategy (the rows never leave their databases until a range is small):
1. chunk the key space by every CHUNK_ROWS-th key of side a (keyset, one
   index scan), and for each range compare (row count, sum of 64 bits of
   md5(canonical row text)) computed in both databases, WORKERS ranges at a
   time per side;
2. a range that differs is split again by the keys of its larger side
   (FANOUT parts) until it holds at most LEAF_ROWS rows; then both sides send
   (canonical key, md5) per row and Python finds the keys that are missing or
   different;
3. every candidate key is re-read from both sides by key, and reported only
   when two reads in a row agree and no signal for it is queued or claimed on
   either side: a change in flight (captured but not yet applied) is waited
   for, up to a deadline, instead of being reported. Keys still in flight at
   the deadline give the verdict `in flight` (exit 3), never `equal`; with no
   bridge running nothing will land, so nothing is waited for and the result
   says so.
The verdict and the keys go to sync.check_runs / sync.check_diffs on the hub.
Rules (`[[rules]]` in the config) are SQL that returns violating rows; they
are run and recorded alongside.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError
from syncbridge.engine.postgres import session as pg_session
from syncbridge.engine.reconcile import canonical

log = logging.getLogger("syncbridge.check")

CHUNK_ROWS = 10_000  # rows per top-level range: one checksum query each side
LEAF_ROWS = 2_000  # a differing range this small is compared row by row
FANOUT = 16  # parts a differing range is split into
WORKERS = 4  # concurrent range queries per side
SETTLE_SECONDS = 30.0  # how long to wait for in-flight keys before reporting them
NO_BRIDGE_GRACE = 5.0  # s; with no bridge beating, in-flight keys are waited for this long
RULE_ROWS_KEPT = 1_000  # violating rows of one rule stored in sync.check_diffs

Bound = tuple[str, ...] | None  # key column values as text, None = open end


def Q(name: str) -> str:  # noqa: N802 - reads like a table of named statements
    return sqlfiles.query("queries/reconcile.sql", name)


def _q(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _render(name: str, **parts: str) -> str:
    return sql.SQL(Q(name)).format(**{k: sql.SQL(v) for k, v in parts.items()}).as_string(None)


# -- per side SQL ----------------------------------------------------------------------


class SideSql:
    """Check statements of one link side, rendered once."""

    def __init__(self, shape: LinkShape, side: str) -> None:
        s = shape.link.side(side)
        table = shape.table(side)
        classes = [canonical.pair_class(shape.a.columns[ca].type, shape.b.columns[cb].type)
                   for ca, cb in shape.pairs]
        self.side = side
        self.cols = shape.cols(side)
        self.keys = shape.key_cols(side)
        self.key_types = [table.columns[k].type for k in self.keys]
        # both sides are Postgres here (a SQL Server side is refused below): exact texts
        fields = [(f"t.{_q(c)}", canonical.EXACT) for c in self.cols]
        self.table = f"{_q(s.schema)}.{_q(s.table)}"
        self.row = canonical.pg_row(fields)
        self.ckey = canonical.pg_row(fields[: len(self.keys)])
        self.fields = ", ".join(canonical.pg_field(c, k) for c, k in fields)
        self.key_obj = "jsonb_build_object(" + ", ".join(
            f"{sql.Literal(k).as_string(None)}, t.{_q(k)}" for k in self.keys) + ")"
        self.key_cols_t = ", ".join(f"t.{_q(k)}" for k in self.keys)
        self.int_key = len(self.keys) == 1 and classes[0] == "int"
        self.span = _render("key_span", key=_q(self.keys[0]), table=self.table,
                            table_literal=sql.Literal(self.table).as_string(None))
        self._cache: dict[tuple[str, bool, bool], str] = {}

    def where(self, lo: bool, hi: bool) -> str:
        """(lo, hi] over the key as a row comparison; bounds are text params cast back."""
        parts, n = [], 1
        for present, op in ((lo, ">"), (hi, "<=")):
            if present:
                vals = ", ".join(f"${n + i}::text::{t}" for i, t in enumerate(self.key_types))
                parts.append(f"({self.key_cols_t}) {op} ({vals})")
                n += len(self.keys)
        return ("where " + " and ".join(parts)) if parts else ""

    def stmt(self, name: str, lo: bool, hi: bool, step: int = 0) -> str:
        key = (name, lo, hi)
        if name == "boundaries":
            return _render(name, table=self.table, where=self.where(lo, hi),
                           key_cols=self.key_cols_t, step=str(int(step)),
                           key_text=", ".join(f"t.{_q(k)}::text" for k in self.keys))
        if key not in self._cache:
            self._cache[key] = _render(
                name, table=self.table, where=self.where(lo, hi), row=self.row,
                hash64=canonical.pg_row_hash64(self.row), ckey=self.ckey, key_obj=self.key_obj)
        return self._cache[key]

    def by_keys(self) -> str:
        if ("by_keys", False, False) not in self._cache:
            defs = ", ".join(f"{_q(k)} {t}" for k, t in zip(self.keys, self.key_types,
                                                             strict=True))
            join = " and ".join(f"t.{_q(k)} = k.{_q(k)}" for k in self.keys)
            self._cache[("by_keys", False, False)] = _render(
                "rows_by_keys", table=self.table, ckey=self.ckey, key_obj=self.key_obj,
                fields=self.fields, key_defs=defs, key_join=join)
        return self._cache[("by_keys", False, False)]


# -- results -----------------------------------------------------------------------------


@dataclass
class Diff:
    kind: str  # missing_on_a | missing_on_b | different | violation
    key_a: dict[str, Any] | None
    key_b: dict[str, Any] | None
    columns: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def same_as(self, other: Diff | None) -> bool:
        return other is not None and (self.kind, self.columns, self.detail) == (
            other.kind, other.columns, other.detail)


@dataclass
class Result:
    kind: str  # link | rule
    name: str
    verdict: str = "error"
    rows_a: int | None = None
    rows_b: int | None = None
    diffs: list[Diff] = field(default_factory=list)
    in_flight: int = 0
    error: str | None = None
    note: str | None = None  # e.g. "no bridge running"
    seconds: float = 0.0
    run_id: int | None = None

    def count(self, kind: str) -> int:
        return sum(1 for d in self.diffs if d.kind == kind)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "verdict": self.verdict, "run_id": self.run_id,
            "rows_a": self.rows_a, "rows_b": self.rows_b, "seconds": round(self.seconds, 3),
            "missing_on_a": self.count("missing_on_a"), "missing_on_b": self.count("missing_on_b"),
            "different": self.count("different"), "violations": self.count("violation"),
            "in_flight": self.in_flight, "error": self.error, "note": self.note,
            "diffs": [d.__dict__ for d in self.diffs],
        }


@dataclass
class _Candidate:
    key_a: dict[str, Any]
    key_b: dict[str, Any]


def _field_text(f: str) -> str | None:
    """'N' -> None, '<len>:<text>' or ':<text>' -> text (for the report)."""
    return None if f == canonical.NULL else f.split(":", 1)[1]


def _norm(key: dict[str, Any] | str) -> str:
    return json.dumps(json.loads(key) if isinstance(key, str) else key, sort_keys=True)


# -- one link ------------------------------------------------------------------------------


class LinkCheck:
    """Compare both sides of one link; pools maps side -> asyncpg pool."""

    def __init__(self, shape: LinkShape, pools: dict[str, asyncpg.Pool],
                 settle: float = SETTLE_SECONDS, chunk_rows: int = CHUNK_ROWS,
                 hub: asyncpg.Pool | None = None) -> None:
        self.shape = shape
        self.hub = hub  # to see whether a bridge is running (None: assume one is)
        self.note: str | None = None
        self.link = shape.link
        self.pools = pools
        self.sql = {s: SideSql(shape, s) for s in ("a", "b")}
        self.sem = {s: asyncio.Semaphore(WORKERS) for s in ("a", "b")}
        self.settle = settle
        self.chunk_rows = chunk_rows
        self.b_to_a = {cb: ca for ca, cb in shape.key_pairs()}
        self.a_to_b = dict(shape.key_pairs())
        self.candidates: dict[str, _Candidate] = {}
        self.rows = {"a": 0, "b": 0}

    async def run(self) -> Result:
        res = Result("link", self.link.name)
        started = time.monotonic()
        bounds = await self._plan()
        ranges = list(zip([None, *bounds], [*bounds, None], strict=True))
        await asyncio.gather(*(self._range(lo, hi, top=True) for lo, hi in ranges))
        settled, moving = await self._settle(dict(self.candidates))
        res.rows_a, res.rows_b = self.rows["a"], self.rows["b"]
        res.diffs, res.in_flight, res.note = settled + moving, len(moving), self.note
        if not settled and not moving and res.rows_a != res.rows_b:
            # every candidate settled equal, so the counts were read mid-flight: count again
            res.rows_a, res.rows_b = await self._count("a"), await self._count("b")
        if settled:
            res.verdict = "different"
        elif moving or res.rows_a != res.rows_b:  # counts that differ are never "equal"
            res.verdict = "in flight"
        else:
            res.verdict = "equal"
        res.seconds = time.monotonic() - started
        return res

    async def _fetch(self, side: str, stmt: str, *args: Any) -> list[asyncpg.Record]:
        async with self.sem[side]:
            return await self.pools[side].fetch(stmt, *args)

    @staticmethod
    def _args(lo: Bound, hi: Bound) -> list[str]:
        return [*(lo or ()), *(hi or ())]

    async def _sum(self, side: str, lo: Bound, hi: Bound) -> tuple[int, str]:
        stmt = self.sql[side].stmt("chunk_checksum", lo is not None, hi is not None)
        row = (await self._fetch(side, stmt, *self._args(lo, hi)))[0]
        return row["n"], row["h"]

    async def _bounds(self, side: str, lo: Bound, hi: Bound, step: int) -> list[Bound]:
        stmt = self.sql[side].stmt("boundaries", lo is not None, hi is not None, step)
        return [tuple(r) for r in await self._fetch(side, stmt, *self._args(lo, hi))]

    async def _plan(self) -> list[Bound]:
        """Top-level chunk bounds: by arithmetic for one integer key (reltuples sized,
        no scan), else every chunk_rows-th key of side a (one index-only scan)."""
        if not self.sql["a"].int_key:
            return await self._bounds("a", None, None, self.chunk_rows)
        row = (await self._fetch("a", self.sql["a"].span))[0]
        if row["lo"] is None or not row["estimate"]:  # empty, or never analyzed: scan keys
            return await self._bounds("a", None, None, self.chunk_rows)
        lo, hi = int(row["lo"]), int(row["hi"])
        parts = max(1, min(math.ceil(row["estimate"] / self.chunk_rows), hi - lo + 1))
        width = (hi - lo + 1) / parts
        return [(str(lo - 1 + round(width * i)),) for i in range(1, parts)]

    async def _range(self, lo: Bound, hi: Bound, top: bool = False) -> None:
        (na, ha), (nb, hb) = await asyncio.gather(self._sum("a", lo, hi), self._sum("b", lo, hi))
        if top:
            self.rows["a"] += na
            self.rows["b"] += nb
        if (na, ha) == (nb, hb):
            return
        if max(na, nb) <= LEAF_ROWS:
            await self._leaf(lo, hi)
            return
        side = "a" if na >= nb else "b"
        step = math.ceil(max(na, nb) / FANOUT)
        inner = [b for b in await self._bounds(side, lo, hi, step) if b != hi]
        parts = list(zip([lo, *inner], [*inner, hi], strict=True))
        if len(parts) == 1:  # rows vanished meanwhile: no split point, compare rows
            await self._leaf(lo, hi)
            return
        await asyncio.gather(*(self._range(a, b) for a, b in parts))

    async def _leaf(self, lo: Bound, hi: Bound) -> None:
        rows = await asyncio.gather(*(
            self._fetch(s, self.sql[s].stmt("leaf_rows", lo is not None, hi is not None),
                        *self._args(lo, hi)) for s in ("a", "b")))
        ra = {r["ck"]: (r["k"], r["h"]) for r in rows[0]}
        rb = {r["ck"]: (r["k"], r["h"]) for r in rows[1]}
        for ck in ra.keys() | rb.keys():
            a, b = ra.get(ck), rb.get(ck)
            if a and b and a[1] == b[1]:
                continue
            key_a = json.loads(a[0]) if a else self._rename(json.loads(b[0]), self.b_to_a)
            key_b = json.loads(b[0]) if b else self._rename(key_a, self.a_to_b)
            self.candidates[ck] = _Candidate(key_a, key_b)

    @staticmethod
    def _rename(key: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
        return {names[k]: v for k, v in key.items()}

    # -- settling: re-read candidates by key until the answer is stable -----------------

    async def _observe(self, cands: dict[str, _Candidate]) -> dict[str, Diff]:
        """Current diffs among the candidates (keys now equal are left out)."""
        got = await asyncio.gather(*(
            self._fetch(s, self.sql[s].by_keys(), json.dumps(
                [c.key_a if s == "a" else c.key_b for c in cands.values()]))
            for s in ("a", "b")))
        ra = {r["ck"]: list(r["f"]) for r in got[0]}
        rb = {r["ck"]: list(r["f"]) for r in got[1]}
        out: dict[str, Diff] = {}
        names = self.sql["a"].cols
        for ck, c in cands.items():
            fa, fb = ra.get(ck), rb.get(ck)
            if fa is not None and fb is not None:
                cols = [i for i, (x, y) in enumerate(zip(fa, fb, strict=True)) if x != y]
                if cols:
                    out[ck] = Diff("different", c.key_a, c.key_b, [names[i] for i in cols], {
                        "a": {names[i]: _field_text(fa[i]) for i in cols},
                        "b": {names[i]: _field_text(fb[i]) for i in cols}})
            elif fa is not None:
                out[ck] = Diff("missing_on_b", c.key_a, c.key_b)
            elif fb is not None:
                out[ck] = Diff("missing_on_a", c.key_a, c.key_b)
        return out

    async def _queued(self, cands: dict[str, _Candidate]) -> set[str]:
        """Candidates with a signal queued or claimed on either side."""
        hit: set[str] = set()
        for side in ("a", "b"):
            by_key = {_norm(c.key_a if side == "a" else c.key_b): ck for ck, c in cands.items()}
            rows = await self._fetch(side, Q("queued_keys"), self.link.name, side,
                                     list(by_key))
            for r in rows:
                if r["key"] is None:
                    return set(cands)
                ck = by_key.get(_norm(r["key"]))
                if ck is not None:
                    hit.add(ck)
        return hit

    async def _count(self, side: str) -> int:
        t = self.link.side(side)
        stmt = sql.SQL("select count(*) from {}").format(sql.Identifier(t.schema, t.table))
        return await self.pools[side].fetchval(stmt.as_string(None))

    async def _bridge(self) -> bool:
        """Is an active bridge beating (so queued keys will land)?"""
        return self.hub is None or bool(await self.hub.fetchval(Q("bridge_alive")))

    async def _settle(self, cands: dict[str, _Candidate]) -> tuple[list[Diff], list[Diff]]:
        """Report a key only when two reads agree with nothing queued for it.

        Returns (settled differences, keys still in flight at the deadline)."""
        if not cands:
            return [], []
        started = time.monotonic()
        deadline = started + self.settle
        prev = await self._observe(cands)
        pending = {ck: cands[ck] for ck in prev}
        final: dict[str, Diff] = {}
        while pending:
            before = await self._queued(pending)
            if before and time.monotonic() < deadline:
                if time.monotonic() - started > NO_BRIDGE_GRACE and not await self._bridge():
                    self.note = "no bridge running"  # nothing will land: stop waiting
                    deadline = time.monotonic()
                    continue
                await asyncio.sleep(0.1)
                continue
            now = await self._observe(pending)
            after = await self._queued(pending)
            for ck in list(pending):
                d = now.get(ck)
                if d is None:  # equal now: it was in flight
                    del pending[ck]
                elif ck not in before and ck not in after and d.same_as(prev.get(ck)):
                    final[ck] = d
                    del pending[ck]
            if pending and time.monotonic() >= deadline:
                return list(final.values()), [now[ck] for ck in pending]
            prev = now
        return list(final.values()), []


# -- rules -------------------------------------------------------------------------------


def rules(config: Config) -> dict[str, dict[str, Any]]:
    """[[rules]] of the config by name: name, peer, sql (returns violating rows)."""
    out: dict[str, dict[str, Any]] = {}
    for body in config.rules:
        name, peer, text = body.name, body.peer, body.sql
        if not name or not text.strip():
            raise ConfigError(f"rule {name!r}: every [[rules]] entry needs name and sql")
        peer = peer or config.hub
        if peer not in config.peers or config.peers[peer].dialect != "postgres":
            raise ConfigError(f"rule {name!r}: peer {peer!r} is not a postgres peer")
        if name in out:
            raise ConfigError(f"rule {name!r} is defined twice")
        out[name] = {"name": name, "peer": peer, "sql": str(text).strip().rstrip(";")}
    return out


async def run_rule(rule: dict[str, Any], pool: asyncpg.Pool) -> Result:
    """Run a rule's query read-only; each returned row is a violation."""
    res = Result("rule", rule["name"])
    started = time.monotonic()
    stmt = sql.SQL("select to_jsonb(r)::text as row from ({}) r").format(
        sql.SQL(rule["sql"])).as_string(None)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        rows = await conn.fetch(stmt)
    res.diffs = [Diff("violation", None, None, detail=json.loads(r["row"])) for r in rows]
    res.verdict = "violated" if rows else "ok"
    res.seconds = time.monotonic() - started
    return res


# -- recording and the whole run -------------------------------------------------------


async def record(hub: asyncpg.Pool, res: Result) -> None:
    """Store a finished result in sync.check_runs / sync.check_diffs on the hub."""
    async with hub.acquire() as conn, conn.transaction():
        res.run_id = await conn.fetchval(Q("start_check"), res.kind, res.name)
        kept = res.diffs[:RULE_ROWS_KEPT] if res.kind == "rule" else res.diffs
        if kept:
            await conn.execute(Q("add_diffs"), res.run_id, json.dumps([d.__dict__ for d in kept]))
        await conn.execute(
            Q("finish_check"), res.run_id, res.verdict, res.rows_a, res.rows_b,
            res.count("missing_on_a"), res.count("missing_on_b"), res.count("different"),
            res.count("violation"), res.in_flight, res.error, res.seconds)


async def open_pools(config: Config, peers: set[str], size: int = WORKERS + 1
                     ) -> dict[str, asyncpg.Pool]:
    """One small pool per peer, in the bridge's pinned settings: key and value texts
    round-trip between sessions and print alike on both peers."""
    pools = {}
    for p in peers:
        pools[p] = await asyncpg.create_pool(
            config.peers[p].dsn, min_size=1, max_size=size, command_timeout=600,
            server_settings=pg_session.settings("syncbridge-check"))
    return pools


async def check_all(config: Config, shapes: dict[str, LinkShape], rule_names: list[str],
                    settle: float = SETTLE_SECONDS, chunk_rows: int = CHUNK_ROWS
                    ) -> list[Result]:
    """Check the given links and run the given rules; every result is recorded."""
    all_rules = rules(config)
    peers = {config.hub} | {all_rules[r]["peer"] for r in rule_names}
    results: list[Result] = []
    runnable = {}
    for name, shape in shapes.items():
        sides = {shape.link.a.peer, shape.link.b.peer}
        if any(config.peers[p].dialect != "postgres" for p in sides):
            # the T-SQL side is rendered (canonical.tsql_chunk_checksum) but not run yet
            results.append(Result("link", name, "error", error="check of a SQL Server side "
                                  "is not supported yet"))
            continue
        runnable[name] = shape
        peers |= sides
    pools = await open_pools(config, peers)
    try:
        hub = pools[config.hub]
        if runnable and not await hub.fetchval(Q("bridge_alive")):
            log.warning("event=no_bridge_running: queued changes are not being applied; "
                        "keys in flight are waited for %.0f s only", NO_BRIDGE_GRACE)
        for name, shape in runnable.items():
            side_pools = {s: pools[shape.link.side(s).peer] for s in ("a", "b")}
            results.append(await _guarded("link", name, LinkCheck(
                shape, side_pools, settle, chunk_rows, hub=hub).run()))
        for name in rule_names:
            rule = all_rules[name]
            results.append(await _guarded("rule", name, run_rule(rule, pools[rule["peer"]])))
        for res in results:
            await record(pools[config.hub], res)
    finally:
        for p in pools.values():
            await p.close()
    return results


async def _guarded(kind: str, name: str, work: Any) -> Result:
    try:
        return await work
    except (asyncpg.PostgresError, OSError) as e:
        return Result(kind, name, "error", error=f"{type(e).__name__}: {e}")


def exit_code(results: list[Result]) -> int:
    """0 all equal / ok, 1 something differs or a rule is violated, 2 an error,
    3 keys still in flight (nothing settled differs)."""
    if any(r.verdict == "error" for r in results):
        return 2
    if any(r.verdict in ("different", "violated") for r in results):
        return 1
    return 3 if any(r.verdict == "in flight" for r in results) else 0


def summary(res: Result) -> str:
    if res.verdict == "error":
        return f"{res.kind} {res.name}: ERROR {res.error}"
    if res.kind == "rule":
        return f"rule {res.name}: {res.verdict} ({res.count('violation')} row(s), " \
               f"{res.seconds:.2f}s)"
    line = (f"link {res.name}: {res.verdict} (a {res.rows_a} rows, b {res.rows_b} rows, "
            f"{res.seconds:.2f}s)")
    if res.diffs:
        line += (f"; missing on a {res.count('missing_on_a')}, missing on b "
                 f"{res.count('missing_on_b')}, different {res.count('different')}")
    if res.in_flight:
        line += f"; {res.in_flight} key(s) still in flight"
    if res.note:
        line += f" [{res.note}]"
    return line
