"""Shared pieces of the webhook tests: a migrated hub, a config, signers, a live server.

The server is real uvicorn on a loopback socket in a thread, so requests go
through HTTP parsing, streaming and the asyncpg pool exactly as in production.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import psycopg
import uvicorn

from syncbridge.bridge.webhook_app import create_app
from syncbridge.engine.config import Config, parse

SECRETS = {
    "WH_SHOP_SECRET": "shpss_test_secret",
    "WH_THINKIFIC_SECRET": "thinkific-api-key",
    "WH_SUPABASE_SECRET": "supa-shared-secret",
    "WH_GITHUB_SECRET": "gh-secret",
    "WH_STANDARD_SECRET": "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode(),
}

PATIENTS_DDL = """
create table public.patients (
    id bigint primary key,
    email text,
    name text,
    updated_at timestamptz
)
"""


def migrate(dsn: str) -> None:
    """Apply every migrations/postgres file in order, as the core's migrate would."""
    folder = resources.files("syncbridge.migrations") / "postgres"
    files = sorted(f.name for f in folder.iterdir()
                   if f.name.endswith(".sql") and not f.name.endswith(".rollback.sql"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in files:
            conn.execute((folder / name).read_text())  # type: ignore[arg-type]
        conn.execute(PATIENTS_DDL)


def _topics(provider: str) -> list[dict[str, Any]]:
    common = {"link": "patients", "side": "a", "key": "id", "version": "updated_at",
              "columns": {"id": "id", "email": "email", "name": "name",
                          "updated_at": "updated_at"}}
    if provider == "shopify":
        return [{"topic": "customers/update", **common},
                {"topic": "customers/create", **common},
                {"topic": "customers/delete", "link": "patients", "side": "a", "key": "id",
                 "columns": {"id": "id"}, "delete": True}]
    if provider == "thinkific":
        return [{"topic": "user.updated", **common}]
    if provider == "supabase":
        return [{"topic": "DELETE:public.*", **common, "delete": True},
                {"topic": "*:public.patients", **common}]
    if provider == "standard":
        return [{"topic": "patient.updated", **common, "root": "data.patient"}]
    return [{"topic": "*", **common}]


def make_config(hub_dsn: str, max_body_bytes: int = 65536,
                extra_peers: dict[str, str] | None = None, side_peer: str = "hub") -> Config:
    """Hub peer + link `patients` (a = public.patients on `side_peer`) + one source per provider."""
    peers = {"hub": {"dsn": hub_dsn}}
    peers.update({n: {"dsn": d} for n, d in (extra_peers or {}).items()})
    raw: dict[str, Any] = {
        "hub": "hub",
        "peers": peers,
        "links": [{"name": "patients", "key": ["id"],
                   "a": {"peer": side_peer, "table": "public.patients"},
                   "b": {"peer": "hub", "table": "public.patients_copy"}}],
        "webhooks": {"max_body_bytes": max_body_bytes, "db_timeout": 2, "sources": {
            "shop": {"provider": "shopify", "secret_env": "WH_SHOP_SECRET",
                     "topics": _topics("shopify")},
            "lms": {"provider": "thinkific", "secret_env": "WH_THINKIFIC_SECRET",
                    "topics": _topics("thinkific")},
            "portal": {"provider": "supabase", "secret_env": "WH_SUPABASE_SECRET",
                       "topics": _topics("supabase")},
            "gh": {"provider": "hmac", "secret_env": "WH_GITHUB_SECRET",
                   "header": "X-Hub-Signature-256", "prefix": "sha256=",
                   "id_header": "X-GitHub-Delivery", "topic_header": "X-GitHub-Event",
                   "topics": _topics("hmac")},
            "std": {"provider": "standard", "secret_env": "WH_STANDARD_SECRET",
                    "topics": _topics("standard")},
        }},
    }
    return parse(raw)


def _mac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def signed(source: str, record: dict[str, Any], event_id: str = "evt-1",
           topic: str | None = None, now: float | None = None) -> tuple[bytes, dict[str, str]]:
    """A real-shaped, correctly signed delivery of `record` from one of the test sources."""
    if source == "shop":
        body = json.dumps({**record, "admin_graphql_api_id": "gid://shopify/Customer/1"}).encode()
        return body, {"X-Shopify-Hmac-Sha256": base64.b64encode(
                          _mac(SECRETS["WH_SHOP_SECRET"].encode(), body)).decode(),
                      "X-Shopify-Topic": topic or "customers/update",
                      "X-Shopify-Event-Id": event_id,
                      "X-Shopify-Webhook-Id": str(uuid.uuid4()),  # differs per delivery
                      "X-Shopify-Shop-Domain": "clinic.myshopify.com",
                      "Content-Type": "application/json"}
    if source == "lms":
        body = json.dumps({"id": event_id, "resource": "user", "action": "updated",
                           "tenant_id": "3", "created_at": "2026-11-25T10:00:00Z",
                           "payload": record}).encode()
        return body, {"X-Thinkific-Hmac-Sha256": _mac(SECRETS["WH_THINKIFIC_SECRET"].encode(),
                                                      body).hex(),
                      "X-Thinkific-Topic": "user.updated", "Content-Type": "application/json"}
    if source == "portal":
        kind = topic or "UPDATE"
        body = json.dumps({"type": kind, "table": "patients", "schema": "public",
                           "record": None if kind == "DELETE" else record,
                           "old_record": record if kind != "INSERT" else None}).encode()
        return body, {"X-Webhook-Secret": SECRETS["WH_SUPABASE_SECRET"],
                      "Content-Type": "application/json"}
    if source == "gh":
        body = json.dumps(record).encode()
        return body, {"X-Hub-Signature-256": "sha256=" + _mac(
                          SECRETS["WH_GITHUB_SECRET"].encode(), body).hex(),
                      "X-GitHub-Event": topic or "patient", "X-GitHub-Delivery": event_id,
                      "Content-Type": "application/json"}
    assert source == "std"
    body = json.dumps({"type": topic or "patient.updated", "timestamp": "2026-11-25T10:00:00Z",
                       "data": {"patient": record}}).encode()
    stamp = str(int(time.time() if now is None else now))
    key = base64.b64decode(SECRETS["WH_STANDARD_SECRET"].removeprefix("whsec_"))
    sig = base64.b64encode(_mac(key, f"{event_id}.{stamp}.".encode() + body)).decode()
    return body, {"webhook-id": event_id, "webhook-timestamp": stamp,
                  "webhook-signature": f"v1,{sig}", "Content-Type": "application/json"}


@contextlib.contextmanager
def live_server(config: Config) -> Iterator[str]:
    """Run the app under uvicorn on 127.0.0.1:<free port> in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # an eventually: a loaded machine starts it slowly
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def queue_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select count(*) from sync.queue where op = 'W'").fetchone()[0]


def patients(dsn: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select id, email, name, updated_at from public.patients").fetchall()
    return {r[0]: r[1:] for r in rows}
