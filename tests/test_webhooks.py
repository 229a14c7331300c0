"""Webhook ingestion end to end: real uvicorn on loopback, real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterator

import asyncpg
import httpx
import psycopg
import pytest
from webhook_support import (
    SECRETS,
    live_server,
    make_config,
    migrate,
    patients,
    queue_rows,
    signed,
)

from syncbridge.engine.config import Config
from syncbridge.engine.webhooks.apply import drain_webhook_events

UTC = dt.UTC


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def hub(new_db) -> str:
    dsn = new_db("wh")
    migrate(dsn)
    return dsn


@pytest.fixture
def server(hub: str) -> Iterator[tuple[str, Config]]:
    config = make_config(hub, max_body_bytes=4096)
    with live_server(config) as url:
        yield url, config


def drain(config: Config, dsns: dict[str, str] | None = None) -> int:
    """Run drain_webhook_events until the queue is empty; total events processed."""
    async def run() -> int:
        dsns_ = {"hub": config.hub_peer.dsn, **(dsns or {})}
        pools = {n: await asyncpg.create_pool(d, min_size=1, max_size=2) for n, d in dsns_.items()}
        try:
            total = 0
            while n := await drain_webhook_events(pools["hub"], pools, config):
                total += n
            return total
        finally:
            for p in pools.values():
                await p.close()
    return asyncio.run(run())


def post(url: str, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/webhooks/{source}", content=body, headers=headers, timeout=10)


def record(pid: int = 7, email: str = "ada@example.org", hour: int = 10) -> dict:
    return {"id": pid, "email": email, "name": "Ada",
            "updated_at": f"2026-11-25T{hour:02d}:00:00+00:00"}


@pytest.mark.parametrize("source", ["shop", "lms", "portal", "gh", "std"])
def test_each_provider_signed_event_becomes_a_row(server, hub, source):
    url, config = server
    body, headers = signed(source, record(), event_id=f"{source}-1")
    r = post(url, source, body, headers)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "accepted"
    assert queue_rows(hub) == 1
    assert drain(config) == 1
    assert patients(hub) == {7: ("ada@example.org", "Ada", dt.datetime(2026, 11, 25, 10,
                                                                        tzinfo=UTC))}
    assert queue_rows(hub) == 0


def _tamper(body: bytes) -> bytes:
    return body.replace(b"ada@", b"eve@")


@pytest.mark.parametrize("source", ["shop", "lms", "portal", "gh", "std"])
def test_bad_signatures_are_401_and_queue_nothing(server, hub, source):
    url, _ = server
    body, headers = signed(source, record())
    sig_header = {"shop": "X-Shopify-Hmac-Sha256", "lms": "X-Thinkific-Hmac-Sha256",
                  "portal": "X-Webhook-Secret", "gh": "X-Hub-Signature-256",
                  "std": "webhook-signature"}[source]
    wrong = dict(headers, **{sig_header: headers[sig_header][:-4] + "AAAA"})
    missing = {k: v for k, v in headers.items() if k != sig_header}
    for b, h in ((body, wrong), (body, missing)):
        r = post(url, source, b, h)
        assert r.status_code == 401, (source, r.text)
    if source != "portal":  # supabase sends a shared secret, not a signature of the body
        assert post(url, source, _tamper(body), headers).status_code == 401
    assert queue_rows(hub) == 0


def test_standard_webhooks_replay_window(server, hub):
    url, _ = server
    # the header carries whole seconds (truncated) and the server reads its clock a
    # moment later: a future stamp needs margin to be outside 300 s when it is read
    # (was +305: a stall of over 4 s between signing and reading would have let it in)
    for offset in (-301, +330):
        body, headers = signed("std", record(), now=time.time() + offset)
        assert post(url, "std", body, headers).status_code == 401
    body, headers = signed("std", record(), now=time.time() - 200)
    assert post(url, "std", body, headers).status_code == 202
    assert queue_rows(hub) == 1


def test_oversized_body_is_413_even_without_content_length(server, hub):
    url, _ = server
    body, headers = signed("gh", {**record(), "name": "x" * 5000})
    assert post(url, "gh", body, headers).status_code == 413

    def chunks() -> Iterator[bytes]:  # streamed: no Content-Length, chunked encoding
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]
    r = httpx.post(f"{url}/webhooks/gh", content=chunks(), headers=headers, timeout=10)
    assert r.status_code == 413
    assert queue_rows(hub) == 0


def test_malformed_json_missing_key_and_unknown_source(server, hub):
    url, _ = server
    body, headers = signed("gh", record())
    bad = b'{"id": 7, "email": '
    _, bad_headers = signed("gh", {})
    bad_headers["X-Hub-Signature-256"] = signed_raw_gh(bad)
    r = post(url, "gh", bad, bad_headers)
    assert r.status_code == 400 and "JSON" in r.json()["error"]

    no_key = json.dumps({"email": "x@example.org", "updated_at": "2026-11-25T10:00:00Z"}).encode()
    bad_headers["X-Hub-Signature-256"] = signed_raw_gh(no_key)
    r = post(url, "gh", no_key, bad_headers)
    assert r.status_code == 400 and r.json()["field"] == "id", r.text

    no_version = json.dumps({"id": 1}).encode()
    bad_headers["X-Hub-Signature-256"] = signed_raw_gh(no_version)
    r = post(url, "gh", no_version, bad_headers)
    assert r.status_code == 400 and r.json()["field"] == "updated_at"

    nul = b'{"id": 1, "name": "a\\u0000b", "updated_at": "2026-11-25T10:00:00Z"}'
    bad_headers["X-Hub-Signature-256"] = signed_raw_gh(nul)
    assert post(url, "gh", nul, bad_headers).status_code == 400  # jsonb cannot hold \u0000
    lone = b'{"id": 1, "name": "\\ud800", "updated_at": "2026-11-25T10:00:00Z"}'
    bad_headers["X-Hub-Signature-256"] = signed_raw_gh(lone)
    assert post(url, "gh", lone, bad_headers).status_code == 400  # a lone surrogate

    assert post(url, "nope", body, headers).status_code == 404
    assert queue_rows(hub) == 0


def signed_raw_gh(body: bytes) -> str:
    import hashlib
    import hmac
    return "sha256=" + hmac.new(SECRETS["WH_GITHUB_SECRET"].encode(), body,
                                hashlib.sha256).hexdigest()


def test_duplicate_delivery_is_2xx_and_applied_once(server, hub):
    url, config = server
    body, headers = signed("shop", record(), event_id="dup-1")
    first, second = post(url, "shop", body, headers), post(url, "shop", body, headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["status"] == "duplicate"
    assert queue_rows(hub) == 1
    assert drain(config) == 1
    assert post(url, "shop", body, headers).status_code == 200  # still a duplicate after apply
    assert queue_rows(hub) == 0 and len(patients(hub)) == 1
    with psycopg.connect(hub) as conn:
        assert conn.execute("select duplicates from sync.webhook_status "
                            "where source = 'shop'").fetchone() == (2,)


def test_out_of_order_events_leave_the_newer_row(server, hub):
    url, config = server
    newer = signed("shop", record(email="new@example.org", hour=12), event_id="e-2")
    older = signed("shop", record(email="old@example.org", hour=9), event_id="e-1")
    for body, headers in (newer, older):
        assert post(url, "shop", body, headers).status_code == 202
    assert drain(config) == 2
    assert patients(hub)[7][0] == "new@example.org"
    # and across drains: the older one arriving after the newer was applied
    late = signed("shop", record(email="late@example.org", hour=8), event_id="e-0")
    assert post(url, "shop", *late).status_code == 202
    assert drain(config) == 1
    assert patients(hub)[7][0] == "new@example.org"
    with psycopg.connect(hub) as conn:
        assert conn.execute("select applied, stale_events from sync.webhook_status "
                            "where source = 'shop'").fetchone() == (1, 2)


def test_delete_topics(server, hub):
    url, config = server
    assert post(url, "shop", *signed("shop", record(pid=1), event_id="c1")).status_code == 202
    assert post(url, "portal", *signed("portal", record(pid=2))).status_code == 202
    drain(config)
    assert set(patients(hub)) == {1, 2}
    body, headers = signed("shop", {"id": 1}, event_id="d1", topic="customers/delete")
    assert post(url, "shop", body, headers).status_code == 202
    assert post(url, "portal", *signed("portal", record(pid=2), topic="DELETE")).status_code == 202
    assert drain(config) == 2
    assert patients(hub) == {}


def test_unappliable_event_is_dead_lettered_and_retryable(server, hub):
    url, config = server
    bad = signed("gh", {**record(pid=5), "id": "five"}, event_id="bad-1")  # not a bigint
    good = signed("gh", record(pid=6), event_id="good-1")
    for body, headers in (bad, good):
        assert post(url, "gh", body, headers).status_code == 202
    assert drain(config) == 2
    assert set(patients(hub)) == {6}  # the bad row did not sink the batch
    assert queue_rows(hub) == 0
    with psycopg.connect(hub, autocommit=True) as conn:
        link, side, key, error = conn.execute(
            "select link, source_side, key, error from sync.dead_letter").fetchone()
        assert (link, side, key) == ("patients", "a", {"source": "gh", "event_id": "bad-1"})
        assert "bigint" in error and "public.patients" in error
        # fix the data, then requeue from the kept payload
        conn.execute("alter table public.patients alter column id type text")
        assert conn.execute("select sync.retry_webhook_v1('gh', 'bad-1')").fetchone() == (True,)
    assert drain(config) == 1
    assert "five" in patients(hub)


def test_writes_carry_the_webhook_origin(server, hub):
    url, config = server
    with psycopg.connect(hub, autocommit=True) as conn:
        conn.execute("""
            create table public.seen (origin text);
            create function public.note() returns trigger language plpgsql as $$
            begin insert into public.seen values (current_setting('syncbridge.origin', true));
                  return null; end $$;
            create trigger note after insert on public.patients
               for each row execute function public.note();
        """)
    assert post(url, "lms", *signed("lms", record())).status_code == 202
    drain(config)
    with psycopg.connect(hub) as conn:
        assert conn.execute("select origin from public.seen").fetchall() == [("webhook:lms",)]


def test_sink_on_another_peer(new_db, hub):
    portal = new_db("portal")
    migrate(portal)
    config = make_config(hub, extra_peers={"portal": portal}, side_peer="portal")
    with live_server(config) as url:
        assert post(url, "std", *signed("std", record(), event_id="m1")).status_code == 202
    assert drain(config, {"portal": portal}) == 1
    assert set(patients(portal)) == {7} and patients(hub) == {}
    assert queue_rows(hub) == 0


def test_database_down_is_503_and_healthz_says_so(hub):
    with psycopg.connect(hub) as conn:  # a port nobody listens on: the hub is "down"
        conn.execute("select 1")
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"postgresql://postgres@127.0.0.1:{s.getsockname()[1]}/nowhere"
    s.close()
    with live_server(make_config(dead)) as url:
        r = post(url, "shop", *signed("shop", record()))
        assert r.status_code == 503, r.text
        assert httpx.get(f"{url}/healthz").status_code == 503
        # verification still comes first: an unsigned request is 401 even then
        assert post(url, "shop", b"{}", {}).status_code == 401


def test_healthz_ok(server):
    url, _ = server
    r = httpx.get(f"{url}/healthz")
    assert r.status_code == 200 and "shop" in r.json()["sources"]


def test_ignored_topic_is_200_and_queues_nothing(server, hub):
    url, _ = server
    body, headers = signed("shop", record(), topic="orders/create")
    r = post(url, "shop", body, headers)
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert queue_rows(hub) == 0


def test_migration_applies_and_rolls_back_through_yoyo(new_db):
    """The real migrate path (yoyo, depends line, rollback sidecar), not the test shortcut."""
    from syncbridge.engine.migrate import migrate as yoyo_migrate

    dsn = new_db("yoyo")
    config = make_config(dsn)
    yoyo_migrate(config)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select to_regproc('sync.enqueue_webhook_v1') is not null, "
                            "to_regclass('sync.webhook_status') is not null").fetchone() == (
                                True, True)
    yoyo_migrate(config, rollback=True)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select to_regnamespace('sync')").fetchone() == (None,)


def test_app_role_needs_only_the_documented_grants(hub):
    """Least privilege: USAGE on sync + EXECUTE on the enqueue function is enough, and
    without the grant (EXECUTE is revoked from PUBLIC) the app answers 503, not 5xx."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    role = f"wh_app_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(hub)
    app_dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    with psycopg.connect(hub, autocommit=True) as conn:
        conn.execute(f"create role {role} login")
        conn.execute(f"grant usage on schema sync to {role}")
    try:
        with live_server(make_config(app_dsn)) as url:
            assert post(url, "shop", *signed("shop", record(), event_id="g1")).status_code == 503
            with psycopg.connect(hub, autocommit=True) as conn:
                conn.execute("grant execute on function sync.enqueue_webhook_v1(text, text, "
                             f"text, text, char, jsonb, jsonb) to {role}")
            assert post(url, "shop", *signed("shop", record(), event_id="g1")).status_code == 202
        assert queue_rows(hub) == 1
    finally:
        with psycopg.connect(hub, autocommit=True) as conn:
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")


def test_crash_between_sink_and_hub_commit_replays_harmlessly(new_db, hub, monkeypatch):
    """The sink committed, the hub did not (crash): the rerun applies the same state
    again and empties the queue; the older version of row 1 is now stale, not applied."""
    from syncbridge.engine.webhooks import apply as webhook_apply

    portal = new_db("portal")
    migrate(portal)
    config = make_config(hub, extra_peers={"portal": portal}, side_peer="portal")
    with live_server(config) as url:
        for i, hour in ((1, 10), (1, 11), (2, 10)):
            body, headers = signed("gh", record(pid=i, hour=hour), event_id=f"c{i}{hour}")
            assert post(url, "gh", body, headers).status_code == 202
    real_finish = webhook_apply._finish

    async def crash(*args):
        raise ConnectionResetError("hub connection lost before commit")
    monkeypatch.setattr(webhook_apply, "_finish", crash)
    with pytest.raises(ConnectionResetError):
        drain(config, {"portal": portal})
    assert queue_rows(hub) == 3 and set(patients(portal)) == {1, 2}  # sink committed
    monkeypatch.setattr(webhook_apply, "_finish", real_finish)
    assert drain(config, {"portal": portal}) == 3
    assert queue_rows(hub) == 0
    assert patients(portal)[1][2].hour == 11
    with psycopg.connect(hub) as conn:
        assert conn.execute("select applied, stale_events from sync.webhook_status "
                            "where source = 'gh'").fetchone() == (2, 1)


def test_concurrent_drains_never_apply_an_event_twice(server, hub):
    url, config = server
    with httpx.Client(base_url=url) as client:
        for i in range(60):
            body, headers = signed("gh", record(pid=i), event_id=f"p{i}")
            assert client.post("/webhooks/gh", content=body, headers=headers).status_code == 202

    async def run() -> list[int]:
        pool = await asyncpg.create_pool(hub, min_size=4, max_size=4)
        try:
            async def worker() -> int:
                total = 0
                while n := await drain_webhook_events(pool, {"hub": pool}, config,
                                                      batch_size=7):
                    total += n
                return total
            return await asyncio.gather(*(worker() for _ in range(3)))
        finally:
            await pool.close()
    assert sum(asyncio.run(run())) == 60
    assert len(patients(hub)) == 60 and queue_rows(hub) == 0
