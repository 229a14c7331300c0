"""Conflict checks of two-way links with a SQL Server side (issue 18 item 15), both drains.

Side a is a real Postgres peer, side b the FakeMssql adapter double of
test_mssql_drain.py, which keeps [sync].[row_state] and [sync].[resend] the
way the adapter's apply_two_way does (rows, bases and resends commit together).
Images are the real thing: both sides' rows are rendered to Postgres texts by
Postgres itself (two_way.PgRows), so these tests prove the decisions and the
bookkeeping; the T-SQL that keeps the bases on a real SQL Server is proven by
tests/test_mssql_live.py where a server is reachable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from test_mssql_drain import (
    LINK,
    FakeMssql,
    U,
    ct_drain,
    ms_row,
    pg_drain,
    pg_insert,
    pg_rows,
    portal,  # noqa: F401 - the fixture `db` builds on
    run,
)

from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.sqlserver import two_way

KEY1 = (U[1], 1)


@pytest.fixture
def db(portal):  # noqa: F811 - test_mssql_drain's fixture: a migrated Postgres side a
    return portal


def with_policy(shape: LinkShape, conflict: str, **more: Any) -> LinkShape:
    return dataclasses.replace(shape, link=dataclasses.replace(shape.link, conflict=conflict,
                                                               **more))


async def synced(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> tuple[Any, Any]:
    """Row 1 on both sides with a known base: inserted on Postgres, carried to SQL Server,
    then the SQL Server drain's first run (its resync finds the sides equal)."""
    ab, ba = pg_drain(pool, shape, fake), ct_drain(pool, shape, fake)
    await pg_insert(pool, 1)
    await ab.drain_once()
    await ba.drain_once()
    assert await conflict_rows(pool) == []
    return ab, ba


async def conflict_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "select policy, winner, status, columns, a_image->>'name' as a_name, "
        "b_image->>'name' as b_name, a_image->>'amount' as a_amount, "
        "b_image->>'amount' as b_amount, last_image is not null as has_base "
        "from sync.conflicts where link = $1 order by id", LINK)
    return [dict(r) for r in rows]


async def pg_edit(pool: asyncpg.Pool, **cols: Any) -> None:
    sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
    await pool.execute(f"update items set {sets} where k2 = $1", 1, *cols.values())


def ms_edit(fake: FakeMssql, **cols: Any) -> None:
    """An application's write on SQL Server (no bridge context)."""
    fake.write({**fake.rows[KEY1], **cols})


async def pg_row(pool: asyncpg.Pool) -> dict[str, Any]:
    return (await pg_rows(pool))[KEY1]


def test_base_images_are_the_same_texts_on_both_sides(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        await synced(pool, shape, fake)
        pg_base = await pool.fetchval("select image::text from sync.row_state where link = $1",
                                      LINK)
        [(ms_base, known)] = fake.bases.values()
        assert known and json.loads(ms_base) == json.loads(pg_base)
        # every value exactly, as Postgres prints it (numeric scale, offset, bytea hex)
        assert json.loads(pg_base)["amount"] == "12345678901234.123456"
        assert json.loads(pg_base)["blob"].startswith("\\x0001")

    run(db, body)


@pytest.mark.parametrize("policy", ["manual", "merge", "b_wins"])
def test_one_sided_edits_are_never_conflicts(db, policy: str) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        ab, ba = await synced(pool, with_policy(shape, policy), fake)
        for n in range(3):  # each side in turn, the other drain running in between
            await pg_edit(pool, name=f"portal {n}", amount=Decimal(n))
            await ba.drain_once()
            await ab.drain_once()
            assert fake.rows[KEY1]["name"] == f"portal {n}"
            ms_edit(fake, name=f"clinic {n}")
            await ab.drain_once()
            await ba.drain_once()
            assert (await pg_row(pool))["name"] == f"clinic {n}"
        # a delete on one side is an edit too
        fake.remove(KEY1)
        await ab.drain_once()
        await ba.drain_once()
        assert KEY1 not in await pg_rows(pool)
        assert await conflict_rows(pool) == []

    run(db, body)


def test_both_sided_edit_is_recorded_and_the_policy_applied_at_a_postgres_sink(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        ab, ba = await synced(pool, shape, fake)  # a_wins (the default)
        await pg_edit(pool, name="portal edit")
        ms_edit(fake, name="clinic edit")
        await ba.drain_once()  # SQL Server -> Postgres meets the Postgres edit
        [c] = await conflict_rows(pool)
        assert (c["policy"], c["winner"], c["status"]) == ("a_wins", "a", "resolved")
        assert (c["a_name"], c["b_name"], c["has_base"]) == ("portal edit", "clinic edit", True)
        assert (await pg_row(pool))["name"] == "portal edit", "side a won: kept"
        await ab.drain_once()  # its own edit and the resignal (op R) of the winner
        assert fake.rows[KEY1]["name"] == "portal edit"
        await ba.drain_once()
        assert (await pg_row(pool))["name"] == "portal edit" and len(await conflict_rows(pool)) == 1

    run(db, body)


def test_both_sided_edit_is_recorded_and_the_policy_applied_at_a_sqlserver_sink(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        ab, ba = await synced(pool, with_policy(shape, "b_wins"), fake)
        await pg_edit(pool, name="portal edit")
        ms_edit(fake, name="clinic edit")
        await ab.drain_once()  # Postgres -> SQL Server meets the SQL Server edit
        [c] = await conflict_rows(pool)
        assert (c["policy"], c["winner"], c["status"]) == ("b_wins", "b", "resolved")
        assert fake.rows[KEY1]["name"] == "clinic edit", "side b won: kept"
        assert len(fake.resends) == 1, "the winner's row is queued to go back, unchecked"
        await ba.drain_once()
        assert (await pg_row(pool))["name"] == "clinic edit" and fake.resends == []
        await ab.drain_once()
        assert fake.rows[KEY1]["name"] == "clinic edit" and len(await conflict_rows(pool)) == 1

    run(db, body)


def test_manual_parks_the_conflict_and_writes_nothing(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        ab, ba = await synced(pool, with_policy(shape, "manual"), fake)
        await pg_edit(pool, name="portal edit")
        ms_edit(fake, name="clinic edit")
        await ab.drain_once()
        await ba.drain_once()
        rows = await conflict_rows(pool)
        assert [(c["status"], c["winner"]) for c in rows] == [("open", None)], rows
        assert fake.rows[KEY1]["name"] == "clinic edit"
        assert (await pg_row(pool))["name"] == "portal edit"

    run(db, body)


@pytest.mark.parametrize("first", ["sqlserver", "postgres"])  # which drain meets both edits
def test_merge_keeps_both_sides_edits_of_different_columns(db, first: str) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        ab, ba = await synced(pool, with_policy(shape, "merge"), fake)
        await pg_edit(pool, name="portal edit")
        ms_edit(fake, amount=Decimal("7.000001"))
        for d in (ba, ab, ba, ab) if first == "sqlserver" else (ab, ba, ab, ba):
            await d.drain_once()
        pg, ms = await pg_row(pool), fake.rows[KEY1]
        assert (pg["name"], pg["amount"]) == ("portal edit", Decimal("7.000001"))
        assert (ms["name"], ms["amount"]) == ("portal edit", Decimal("7.000001"))
        [c] = await conflict_rows(pool)
        assert (c["winner"], c["columns"], c["status"]) == ("merge", [], "resolved")

    run(db, body)


def test_merge_fallback_decides_a_column_both_sides_changed(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        ab, ba = await synced(pool, with_policy(shape, "merge", merge_fallback="b_wins"), fake)
        await pg_edit(pool, name="portal edit", amount=Decimal("1"))
        ms_edit(fake, name="clinic edit")
        for d in (ab, ba, ab, ba):
            await d.drain_once()
        pg, ms = await pg_row(pool), fake.rows[KEY1]
        assert (pg["name"], pg["amount"]) == ("clinic edit", Decimal("1"))
        assert (ms["name"], ms["amount"]) == ("clinic edit", Decimal("1"))
        [c] = await conflict_rows(pool)
        assert c["columns"] == ["name"] and c["winner"] == "merge"

    run(db, body)


def test_insert_on_both_sides_is_a_conflict_and_a_first_run_records_no_base(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        # rows that differ before the first run: the first resync takes SQL Server's
        # (as before) and records the overwritten row, policy no_base
        await pg_insert(pool, 1, name="portal before")
        fake.write(ms_row(1, name="clinic before"))
        ab, ba = pg_drain(pool, shape, fake), ct_drain(pool, shape, fake)
        await ba.drain_once()
        [c] = await conflict_rows(pool)
        assert (c["policy"], c["winner"], c["has_base"]) == ("no_base", "b", False)
        await ab.drain_once()
        assert fake.rows[KEY1]["name"] == (await pg_row(pool))["name"] == "clinic before"
        # a key new on both sides since: a conflict settled by the policy (a_wins)
        await pg_insert(pool, 2, name="portal new")
        fake.write(ms_row(2, name="clinic new"))
        await ab.drain_once()
        await ba.drain_once()
        assert fake.rows[(U[2], 2)]["name"] == "portal new"
        assert [r["winner"] for r in await conflict_rows(pool)] == ["b", "a"]

    run(db, body)


def test_pg_rows_renders_sqlserver_values_as_postgres_texts(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        born = dt.date(2000, 1, 2)  # asyncpg writes date(1, 1, 1) as -infinity
        await pg_insert(pool, 1, born=born)
        image = two_way.pg_sql.text_obj(shape.cols("a"), "t", shape.cols("a")).as_string(None)
        stored = await pool.fetchval(f"select {image}::text from items t")
        d = pg_drain(pool, shape, fake)
        payload = d._as_source(ms_row(1, born=born))
        [(image, typed)] = await d.pg_rows.read(pool, [payload])
        assert json.loads(image) == json.loads(stored)
        assert typed["amount"] == ms_row(1)["amount"]

    run(db, body)


def test_a_postgres_edit_before_the_first_resync_takes_a_row_without_base(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        # the sides differed before install, and Postgres edits first: no base exists yet,
        # so the edit is applied (no_base), never parked, even under manual
        fake.rows[KEY1] = ms_row(1, name="clinic before")
        await pg_insert(pool, 1, name="portal edit")
        ab = pg_drain(pool, with_policy(shape, "manual"), fake)
        await ab.drain_once()
        assert fake.rows[KEY1]["name"] == "portal edit"
        [c] = await conflict_rows(pool)
        assert (c["policy"], c["winner"], c["status"]) == ("no_base", "a", "resolved")

    run(db, body)


def test_settled_merge_is_written_on_either_sink(db) -> None:
    async def body(pool: asyncpg.Pool, shape: LinkShape, fake: FakeMssql) -> None:
        # what the daemon does when an operator settles a parked merge: the drain whose
        # sink is the winner's side writes the merged row (images: Postgres texts)
        ab, ba = await synced(pool, with_policy(shape, "merge", merge_fallback="manual"), fake)
        image = json.loads(await pool.fetchval(
            "select image::text from sync.row_state where link = $1", LINK))
        merged = {**image, "name": "settled", "amount": "2.500000"}
        key = json.dumps({"id": str(U[1]), "k2": 1})
        await ab.write_settled(merged, key)
        assert (fake.rows[KEY1]["name"], fake.rows[KEY1]["amount"]) == ("settled",
                                                                        Decimal("2.5"))
        await ba.write_settled({**merged, "name": "settled too"}, key)
        assert (await pg_row(pool))["name"] == "settled too"
        await ab.write_settled(None, key)
        assert KEY1 not in fake.rows

    run(db, body)
