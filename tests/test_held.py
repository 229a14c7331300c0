"""Held: a batch's source connection given back after the server ended its session.

When the server ends a backend (pg_terminate_backend, a restart), asyncpg closes the
connection and hands its pool slot back by itself; the proxy the drain still holds
then raises InterfaceError at any call. Giving the batch back must still work and
leave the failure the drain reports as the real one (the session ended), not
"connection has been released back to the pool" (seen when every syncbridge backend
was terminated under writes).
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from syncbridge.engine.postgres.held import Held


def test_a_held_connection_the_server_ended_is_given_back_without_an_interface_error(new_db):
    dsn = new_db("held")

    async def go() -> None:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            conn = await pool.acquire()
            held = Held(pool, conn)
            await conn.execute("begin")
            pid = await conn.fetchval("select pg_backend_pid()")
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("select pg_terminate_backend(%s)", (pid,))
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                await conn.execute("select 1")
            await held.release()  # raised InterfaceError: the proxy was already given back
            assert held.conn is None
            # the pool replaced the ended session and still serves
            assert await pool.fetchval("select pg_backend_pid()") != pid
        finally:
            await pool.close()

    asyncio.run(go())
