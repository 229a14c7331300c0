"""The webhook app: verified provider events become rows of sync.queue.

`POST /webhooks/{source}` answers:
  202 accepted (queued), 200 duplicate or a topic with no mapping (ignored),
  401 bad or missing signature, 400 body not a JSON object or a mapped key /
  version field missing (JSON names the field), 404 unknown source,
  413 body over max_body_bytes, 503 hub unreachable (the sender retries).
The only write is one call of `sync.enqueue_webhook_v1` (dedupe record +
queue row + NOTIFY in one statement), so no answer leaves anything half-written.
Logs carry source, topic, event id and outcome; never a secret, a signature
or a body.

Where things are: signatures, event ids and topics are checked in
engine/webhooks/verify.py; payload -> row mapping in engine/webhooks/map.py;
queued events are applied, and dead-lettered when they cannot be, by the
bridge's drain in engine/webhooks/apply.py (its docstring follows a dead
letter from sync.dead_letter to its retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config
from syncbridge.engine.errors import DATABASE_ERRORS, sqlstate
from syncbridge.engine.webhooks.config import parse_webhooks
from syncbridge.engine.webhooks.map import map_event
from syncbridge.engine.webhooks.model import Source, WebhookConfig
from syncbridge.engine.webhooks.verify import (
    EventError,
    SignatureError,
    identify,
    parse_body,
    verify,
)

log = logging.getLogger("syncbridge.webhooks")
SQL = sqlfiles.Queries("queries/webhooks.sql")


class _TooLarge(Exception):
    pass


@dataclass
class _State:
    config: Config
    webhooks: WebhookConfig
    pool: asyncpg.Pool | None = None


def create_app(config: Config) -> Starlette:
    """The Starlette app; config problems raise ConfigError here, before serving."""
    state = _State(config, parse_webhooks(config))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # min_size=0: the app starts (and answers 503) even while the hub is down
        state.pool = await asyncpg.create_pool(
            config.hub_peer.dsn, min_size=0, max_size=state.webhooks.pool_max_size,
            timeout=state.webhooks.db_timeout, command_timeout=state.webhooks.db_timeout)
        try:
            yield
        finally:
            await state.pool.close()

    app = Starlette(routes=[
        Route("/webhooks/{source}", _receive, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.webhooks = state
    return app


def _answer(code: int, **body: object) -> JSONResponse:
    return JSONResponse(body, status_code=code)


async def _receive(request: Request) -> Response:
    state: _State = request.app.state.webhooks
    name = request.path_params["source"]
    source = state.webhooks.sources.get(name)
    if source is None:
        return _answer(404, error="unknown webhook source")
    try:
        body = await _read_body(request, state.webhooks.max_body_bytes)
    except _TooLarge:
        log.warning("source=%s refused: body over %d bytes", name, state.webhooks.max_body_bytes)
        return _answer(413, error=f"body larger than {state.webhooks.max_body_bytes} bytes")
    except ClientDisconnect:
        return Response(status_code=400)
    try:
        verify(source, request.headers, body)
    except SignatureError:
        log.warning("source=%s refused: signature does not verify", name)
        return _answer(401, error="signature does not verify")
    try:
        return await _accept(state, source, request, body)
    except EventError as e:
        log.warning("source=%s refused: %s", name, e)
        return _answer(400, error=str(e), field=e.field)


async def _accept(state: _State, source: Source, request: Request, body: bytes) -> Response:
    parsed = parse_body(body)
    event_id, topic = identify(source, request.headers, body, parsed)
    tmap = source.mapping(topic)
    if tmap is None:
        log.info("source=%s topic=%s event=%s ignored: no mapping", source.name, topic, event_id)
        return _answer(200, status="ignored", topic=topic)
    mapped = map_event(source, tmap, parsed)
    try:
        queued = await _enqueue(state, source, event_id, topic, tmap.link, tmap.side,
                                json.dumps(mapped.key), body.decode("utf-8"))
    except DATABASE_ERRORS as e:
        if (sqlstate(e) or "").startswith("22"):  # e.g. \u0000, which jsonb cannot store
            raise EventError(f"payload cannot be stored: {type(e).__name__}") from None
        log.error("source=%s event=%s hub unavailable: %s", source.name, event_id,
                  type(e).__name__)
        return _answer(503, error="database unavailable, retry later")
    outcome = "accepted" if queued else "duplicate"
    log.info("source=%s topic=%s event=%s %s", source.name, topic, event_id, outcome)
    return _answer(202 if queued else 200, status=outcome, event_id=event_id)


async def _enqueue(state: _State, source: Source, event_id: str, topic: str, link: str,
                   side: str, key: str, payload: str) -> bool:
    assert state.pool is not None
    async with asyncio.timeout(state.webhooks.db_timeout):
        async with state.pool.acquire() as conn:
            return await conn.fetchval(SQL["enqueue"],
                                       source.name, event_id, topic, link, side, key, payload)


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it passes `limit` (Content-Length may lie or be absent)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _healthz(request: Request) -> Response:
    state: _State = request.app.state.webhooks
    assert state.pool is not None
    try:
        async with asyncio.timeout(state.webhooks.db_timeout):
            async with state.pool.acquire() as conn:
                await conn.fetchval("select 1")
    except DATABASE_ERRORS:
        return _answer(503, ok=False, database="unreachable")
    return _answer(200, ok=True, sources=sorted(state.webhooks.sources))


def serve(config: Config, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the app under uvicorn until SIGINT/SIGTERM (uvicorn drains open requests).

    Mappings are checked against the hub's catalog first, and the config file
    and its sources are named, so "404 to everything" is never a mystery."""
    from syncbridge.engine.validate import webhook_tables

    app = create_app(config)
    webhook_tables(config)
    sources = sorted(config.webhooks.sources)
    log.info("event=webhooks_start config=%s hub=%s sources=%s listen=%s:%d", config.path,
             config.hub, ",".join(sources) or "none", host, port)
    if not sources:
        log.warning("event=no_webhook_sources config=%s reason=%s", config.path,
                    "[webhooks.sources] is empty: every POST will get 404")
    uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                  server_header=False, log_config=None)).run()
