"""`syncbridge bench webhooks`: how many signed deliveries per second the app accepts.

The app runs under uvicorn in its own process (as in production, and so the
load generator does not share its event loop or GIL); an httpx AsyncClient
fires correctly signed, distinct events from `concurrency` tasks for
`seconds`. Afterwards the queued events are drained into a scratch table to
give the apply rate too. Everything the bench creates (schema
syncbridge_bench, its queue rows, dedupe records and counters) is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import asyncpg
import httpx

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config, parse

SOURCE = "bench"  # webhook source name used by the bench
SECRET_ENV = "SYNCBRIDGE_BENCH_SECRET"
STARTUP_TIMEOUT = 15.0  # seconds for uvicorn to answer /healthz

SQL = sqlfiles.Queries("bench/webhooks.sql")


def bench_config(dsn: str) -> Config:
    """A one-peer config whose `bench` source maps hmac-signed JSON to the scratch table."""
    return parse({
        "peers": {"hub": {"dsn": dsn}},
        "links": [{"name": "syncbridge_bench", "key": ["id"],
                   "a": {"peer": "hub", "table": "syncbridge_bench.events"},
                   "b": {"peer": "hub", "table": "syncbridge_bench.events_b"}}],
        "webhooks": {"sources": {SOURCE: {
            "provider": "hmac", "secret_env": SECRET_ENV, "header": "X-Signature",
            "prefix": "sha256=", "id_header": "X-Event-Id",
            "topics": [{"topic": "*", "link": "syncbridge_bench", "side": "a", "key": "id",
                        "version": "updated_at",
                        "columns": {"id": "id", "body": "body", "updated_at": "updated_at"}}],
        }}},
    })


def serve_from_env() -> None:
    """Child process: the webhook app on 127.0.0.1; DSN and port come by environment
    (never argv, where `ps` would show a password)."""
    from syncbridge.bridge.webhook_app import serve  # the app lives in bridge/

    serve(bench_config(os.environ["SYNCBRIDGE_BENCH_DSN"]), host="127.0.0.1",
          port=int(os.environ["SYNCBRIDGE_BENCH_PORT"]))


def run_webhook_bench(dsn: str, seconds: float = 10.0, concurrency: int = 32) -> dict[str, Any]:
    """Accepted deliveries per second and p50/p99 latency against the migrated hub `dsn`."""
    os.environ.setdefault(SECRET_ENV, secrets.token_hex(16))  # the child inherits it
    return asyncio.run(_bench(dsn, seconds, concurrency))


async def _bench(dsn: str, seconds: float, concurrency: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("select to_regproc('sync.enqueue_webhook_v1') is not null"):
            raise RuntimeError("the hub has no webhook schema: run `syncbridge migrate` first")
        await conn.execute(SQL["cleanup"])
        await conn.execute(SQL["setup"])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, SYNCBRIDGE_BENCH_DSN=dsn, SYNCBRIDGE_BENCH_PORT=str(port))
        child = subprocess.Popen(
            [sys.executable, "-c",
             "from syncbridge.bridge.bench.webhooks import serve_from_env; serve_from_env()"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_healthy(url, child)
            result = await _fire(url, seconds, concurrency)
        finally:
            child.terminate()  # SIGTERM: uvicorn finishes open requests and exits
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        result.update(await _drain_all(dsn))
        return result
    finally:
        with contextlib.suppress(Exception):
            await conn.execute(SQL["cleanup"])
        await conn.close()


async def _wait_healthy(url: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with httpx.AsyncClient() as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the webhook app did not become healthy")
            await asyncio.sleep(0.05)  # polling a child process, bounded by the deadline


async def _fire(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    key = os.environ[SECRET_ENV].encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(1, 1 << 62))
    stop = time.monotonic() + seconds

    async def worker() -> None:
        # one client (one keep-alive connection) per task: a shared httpx pool costs
        # the load generator ~3x more CPU per request at 32 connections than at 4
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await _send(client)

    async def _send(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            n = next(counter)
            body = json.dumps({"id": n, "body": f"event {n}",
                               "updated_at": "2026-11-25T10:00:00Z"}).encode()
            sig = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            t0 = time.perf_counter()
            r = await client.post(f"/webhooks/{SOURCE}", content=body, headers={
                "X-Signature": sig, "X-Event-Id": f"bench-{n}",
                "Content-Type": "application/json"})
            latencies.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"seconds": round(elapsed, 2), "concurrency": concurrency,
            "requests": len(latencies), "accepted": statuses.get(202, 0),
            "statuses": statuses,
            "accepted_per_s": round(statuses.get(202, 0) / elapsed, 1),
            "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2)}


async def _drain_all(dsn: str) -> dict[str, Any]:
    from syncbridge.engine.webhooks.apply import drain_webhook_events

    config = bench_config(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        started, total = time.monotonic(), 0
        while n := await drain_webhook_events(pool, {"hub": pool}, config):
            total += n
        elapsed = time.monotonic() - started
        async with pool.acquire() as conn:
            rows = await conn.fetchval("select count(*) from syncbridge_bench.events")
    finally:
        await pool.close()
    return {"drained": total, "drained_rows": rows,
            "drain_per_s": round(total / elapsed, 1) if elapsed else 0.0}
