"""Two-way links against a real SQL Server (issue 18 item 15): the conflict checks of
both drains with the bases kept in [sync].[row_state] by the apply batch itself.

Skipped, with the reason, where no SQL Server is reachable (see
tests/test_mssql_live.py: SYNC_TEST_MSSQL_URL or Docker + testcontainers).
The same decisions run against an adapter double in tests/test_mssql_two_way.py;
what only these prove is the T-SQL: the locked state read, the base and resend
writes in the batch's transaction, HASHBYTES lookups, and that a SQL Server row
read back renders the same Postgres texts as the row it came from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import psycopg
import pytest
from mssql_shape import KEY, TABLE
from test_mssql_live import (  # noqa: F401 - session fixtures this module builds on
    _pg_create_table,
    db_url,
    pyodbc_module,
    server_url,
)

from syncbridge.engine import catalog, config
from syncbridge.engine.migrate import migrate
from syncbridge.engine.postgres import capture
from syncbridge.engine.sqlserver import connection as odbc
from syncbridge.engine.sqlserver import peer as mp
from syncbridge.engine.sqlserver import types as mssql_types
from syncbridge.engine.sqlserver.ct_to_pg import CtToPgDrain
from syncbridge.engine.sqlserver.pg_to_ct import PgToCtDrain

MS_TABLE = f"[dbo].[{TABLE.replace(']', ']]')}]"
PG_TABLE = psycopg.sql.Identifier("public", TABLE).as_string(None)
UID = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


@dataclasses.dataclass
class Live:
    pool: asyncpg.Pool
    ab: PgToCtDrain  # Postgres (a) -> SQL Server (b)
    ba: CtToPgDrain  # SQL Server (b) -> Postgres (a)
    app: Any  # an application's own SQL Server connection
    link: str


Body = Callable[[Live], Awaitable[None]]


@pytest.fixture
def live(db_url: str, pyodbc_module: Any,  # noqa: F811 - the imported fixtures
         new_db: Any) -> Iterator[Callable[..., None]]:
    """run(body, conflict=...): a fresh link between a new Postgres database and the test
    SQL Server database, capture installed, both drains built as the daemon builds them."""
    app = pyodbc_module.connect(odbc.odbc_connection_string(db_url), autocommit=True)
    app.execute(f"DELETE FROM {MS_TABLE}; DELETE FROM [sync].[row_state]; "
                "DELETE FROM [sync].[resend];")
    pg_dsn = new_db("portal")
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(_pg_create_table())

    def run(body: Body, **policy: Any) -> None:
        name = f"tw_{uuid.uuid4().hex[:8]}"
        raw = {"hub": "portal",
               "peers": {"portal": {"dialect": "postgres", "dsn": pg_dsn},
                         "clinic": {"dialect": "sqlserver", "dsn": db_url}},
               "links": [{"name": name, "a": {"peer": "portal", "table": f"public.{TABLE}"},
                          "b": {"peer": "clinic", "table": f"dbo.{TABLE}"}, "key": list(KEY),
                          "direction": "both", **policy}]}
        cfg = config.parse(raw)
        migrate(config.parse({"peers": {"portal": raw["peers"]["portal"]}}))
        link = cfg.links[name]

        async def main() -> None:
            peer = mp.MssqlPeer(cfg.peers["clinic"])
            b = await peer.read_table(link.b)
            with psycopg.connect(pg_dsn, autocommit=True) as c:
                a = catalog.read_pg_table(c, link.a)
                shape = catalog.shape(link, a, b, check_types=mssql_types.type_checker(
                    "postgres", "sqlserver"))
                capture.install(c, shape, "a")
            pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4,
                                             server_settings={"TimeZone": "UTC"})
            try:
                await body(Live(pool, PgToCtDrain(shape, "a", pool, peer, pool),
                                CtToPgDrain(shape, "b", peer, pool, pool), app, name))
            finally:
                await pool.close()
                await peer.close()

        asyncio.run(main())

    yield run
    app.close()


async def synced(t: Live) -> None:
    """One row on both sides with a known base on both: written on Postgres, carried to
    SQL Server, then the SQL Server drain's first run finds the sides equal."""
    await t.pool.execute(f"insert into {PG_TABLE} (id, k2, name, amount) values ($1, 1, $2, $3)",
                         UID, "Zoë", Decimal("1.5000"))
    await t.ab.drain_once()
    await t.ba.drain_once()
    assert await conflicts(t) == []


async def settle(t: Live, *order: str) -> None:
    for d in order:
        await (t.ab if d == "ab" else t.ba).drain_once()


async def conflicts(t: Live) -> list[dict[str, Any]]:
    return [dict(r) for r in await t.pool.fetch(
        "select policy, winner, status, columns, a_image->>'name' as a_name, "
        "b_image->>'name' as b_name from sync.conflicts where link = $1 order by id", t.link)]


async def pg_edit(t: Live, **cols: Any) -> None:
    sets = ", ".join(f"{psycopg.sql.Identifier(c).as_string(None)} = ${i + 2}"
                     for i, c in enumerate(cols))
    await t.pool.execute(f"update {PG_TABLE} set {sets} where k2 = $1", 1, *cols.values())


def ms_edit(t: Live, column: str, value: Any) -> None:
    t.app.execute(f"UPDATE {MS_TABLE} SET [{column}] = ? WHERE k2 = 1;", value)


async def both(t: Live) -> tuple[dict[str, Any], tuple[Any, ...]]:
    pg = dict(await t.pool.fetchrow(f"select name, amount from {PG_TABLE} where k2 = 1"))
    ms = tuple(t.app.execute(f"SELECT name, amount FROM {MS_TABLE} WHERE k2 = 1;").fetchone())
    return pg, ms


def test_live_bases_are_kept_in_the_sqlserver_sync_schema(live: Any) -> None:
    async def body(t: Live) -> None:
        await synced(t)
        [(key, image, known)] = t.app.execute(
            "SELECT [key], image, known FROM [sync].[row_state] WHERE link = ?;",
            t.link).fetchall()
        pg_key, pg_image = await t.pool.fetchrow(
            "select key::text, image::text from sync.row_state where link = $1", t.link)
        assert known and json.loads(key) == json.loads(pg_key)
        assert json.loads(image) == json.loads(pg_image), "the same texts on both sides"

    live(body)


@pytest.mark.parametrize("policy", ["manual", "merge", "a_wins"])
def test_live_one_sided_edits_are_never_conflicts(live: Any, policy: str) -> None:
    async def body(t: Live) -> None:
        await synced(t)
        for n in range(2):
            await pg_edit(t, name=f"portal {n}")
            await settle(t, "ba", "ab", "ba")
            ms_edit(t, "name", f"clinic {n}")
            await settle(t, "ab", "ba", "ab")
            pg, ms = await both(t)
            assert pg["name"] == ms[0] == f"clinic {n}"
        assert await conflicts(t) == []

    live(body, conflict=policy)


@pytest.mark.parametrize(("policy", "order", "winner", "name"), [
    ("a_wins", ("ba", "ab", "ba"), "a", "portal edit"),  # met at the Postgres sink
    ("b_wins", ("ab", "ba", "ab"), "b", "clinic edit"),  # met at the SQL Server sink
])
def test_live_both_sided_edit_is_recorded_with_the_policy_applied(
        live: Any, policy: str, order: tuple[str, ...], winner: str, name: str) -> None:
    async def body(t: Live) -> None:
        await synced(t)
        await pg_edit(t, name="portal edit")
        ms_edit(t, "name", "clinic edit")
        await settle(t, *order)
        [c] = await conflicts(t)
        assert (c["policy"], c["winner"], c["status"]) == (policy, winner, "resolved")
        assert (c["a_name"], c["b_name"]) == ("portal edit", "clinic edit")
        pg, ms = await both(t)
        assert pg["name"] == ms[0] == name

    live(body, conflict=policy)


def test_live_manual_parks_the_conflict(live: Any) -> None:
    async def body(t: Live) -> None:
        await synced(t)
        await pg_edit(t, name="portal edit")
        ms_edit(t, "name", "clinic edit")
        await settle(t, "ab", "ba")
        assert [(c["status"], c["winner"]) for c in await conflicts(t)] == [("open", None)]
        pg, ms = await both(t)
        assert (pg["name"], ms[0]) == ("portal edit", "clinic edit"), "nothing overwritten"

    live(body, conflict="manual")


@pytest.mark.parametrize("order", [("ba", "ab", "ba", "ab"), ("ab", "ba", "ab", "ba")])
def test_live_merge_keeps_edits_of_different_columns(live: Any, order: tuple[str, ...]) -> None:
    async def body(t: Live) -> None:
        await synced(t)
        await pg_edit(t, name="portal edit")
        ms_edit(t, "amount", Decimal("7.2500"))
        await settle(t, *order)
        pg, ms = await both(t)
        assert (pg["name"], pg["amount"]) == ("portal edit", Decimal("7.2500"))
        assert (ms[0], ms[1]) == ("portal edit", Decimal("7.2500"))
        [c] = await conflicts(t)
        assert (c["winner"], c["columns"]) == ("merge", [])

    live(body, conflict="merge")
