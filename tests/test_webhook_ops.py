"""Webhooks as an operator runs them: retried dead letters close, Bearer as documented,
plain tables, mappings checked at start, only the hub's DSN, and SIGHUP."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from test_webhooks import drain, post, record
from webhook_support import SECRETS, live_server, make_config, migrate, patients, signed

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import toml_value, wait_until
from syncbridge.bridge.cli import main
from syncbridge.engine import validate
from syncbridge.engine.config import Config, ConfigError, parse


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def hub(new_db) -> str:
    dsn = new_db("wh")
    migrate(dsn)
    return dsn


def _raw(config: Config) -> dict[str, Any]:
    return copy.deepcopy(config.raw)


def _toml(raw: dict[str, Any]) -> str:
    """A whole config as top-level keys with inline tables (valid TOML)."""
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in raw.items())


def _bad_event(url: str, hub: str, config: Config) -> None:
    bad = signed("gh", {**record(pid=5), "id": "five"}, event_id="bad-1")  # not a bigint
    assert post(url, "gh", *bad).status_code == 202
    assert drain(config) == 1
    with psycopg.connect(hub, autocommit=True) as conn:
        assert conn.execute("select dead_letters from sync.webhook_status "
                            "where source = 'gh'").fetchone() == (1,)
        conn.execute("alter table public.patients alter column id type text")


def _closed(hub: str) -> tuple:
    with psycopg.connect(hub) as conn:
        return (conn.execute("select status from sync.dead_letter").fetchall(),
                conn.execute("select dead_letters from sync.webhook_status "
                             "where source = 'gh'").fetchone())


def test_retried_webhook_dead_letter_closes(hub):
    config = make_config(hub)
    with live_server(config) as url:
        _bad_event(url, hub, config)
    with psycopg.connect(hub, autocommit=True) as conn:
        assert conn.execute("select sync.retry_webhook_v1('gh', 'bad-1')").fetchone() == (True,)
    assert drain(config) == 1
    assert "five" in patients(hub)
    assert _closed(hub) == ([("closed",)], (0,))


def test_retry_dead_requeues_a_webhook_event_not_a_key_signal(hub):
    config = make_config(hub)
    with live_server(config) as url:
        _bad_event(url, hub, config)
    with psycopg.connect(hub, autocommit=True) as conn:
        assert conn.execute("select sync.retry_dead()").fetchone() == (1,)
        assert conn.execute("select op, source, event_id from sync.queue").fetchall() == [
            ("W", "gh", "bad-1")]
    assert drain(config) == 1
    assert "five" in patients(hub)
    assert _closed(hub) == ([("closed",)], (0,))


@pytest.mark.parametrize("value, status", [
    ("Bearer {s}", 202), ("bearer {s}", 202), ("BEARER {s}", 202),
    ("{s}", 401), ("Basic {s}", 401), ("Bearer wrong", 401),
])
def test_supabase_authorization_is_bearer_in_any_case(hub, value, status):
    raw = _raw(make_config(hub))
    raw["webhooks"]["sources"]["portal"]["header"] = "Authorization"
    config = parse(raw)
    body, headers = signed("portal", record())
    headers.pop("X-Webhook-Secret", None)
    headers["Authorization"] = value.format(s=SECRETS["WH_SUPABASE_SECRET"])
    with live_server(config) as url:
        r = httpx.post(f"{url}/webhooks/portal", content=body, headers=headers, timeout=10)
    assert r.status_code == status, r.text


def test_a_topic_may_target_a_plain_table_with_no_link(hub):
    with psycopg.connect(hub, autocommit=True) as conn:
        conn.execute("create table public.enrollments (id bigint primary key, email text)")
    raw = _raw(make_config(hub))
    raw["webhooks"]["sources"]["gh"]["topics"] = [
        {"topic": "*", "table": "public.enrollments", "key": "id",
         "columns": {"id": "id", "email": "email"}}]
    config = parse(raw)
    validate.webhook_tables(config)
    with live_server(config) as url:
        assert post(url, "gh", *signed("gh", record(pid=41), event_id="e-41")).status_code == 202
    assert drain(config) == 1
    with psycopg.connect(hub) as conn:
        assert conn.execute("select id, email from public.enrollments").fetchall() == [
            (41, "ada@example.org")]


def test_a_mapped_column_the_table_lacks_stops_run_at_start(hub, tmp_path, capsys):
    raw = _raw(make_config(hub))
    raw["webhooks"]["sources"]["gh"]["topics"][0]["columns"]["nickname"] = "nick"
    with psycopg.connect(hub, autocommit=True) as conn:
        conn.execute("create table public.patients_copy (like public.patients including all)")
    path = tmp_path / "s.toml"
    path.write_text(_toml(raw))
    with pytest.raises(ConfigError, match="column 'nickname' does not exist in public.patients"):
        validate.webhook_tables(parse(raw))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "webhook source 'gh' topic '*': column 'nickname' does not exist" in err


def test_webhooks_needs_only_the_hub_dsn_and_names_file_and_sources(hub, tmp_path):
    raw = _raw(make_config(hub))
    raw["peers"]["clinic"] = {"dsn_env": "SYNC_TEST_UNSET_CLINIC_DSN"}
    path = tmp_path / "s.toml"
    path.write_text(_toml(raw))
    log = tmp_path / "webhooks.log"
    env = {k: v for k, v in os.environ.items() if k != "SYNC_TEST_UNSET_CLINIC_DSN"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "syncbridge.bridge.cli", "webhooks",
                                 "--config", str(path), "--port", "0"], stdout=out, stderr=out,
                                env=env)
    try:
        wait_until(lambda: "event=webhooks_start" in log.read_text() or proc.poll() is not None,
                   30, "the webhook app to start")
        text = log.read_text()
        assert proc.poll() is None, text
        assert f"config={path}" in text and "sources=gh,lms,portal,shop,std" in text
    finally:
        proc.terminate()
        proc.wait(15)


def test_bridge_names_undrained_webhook_sources_at_start_and_on_sighup(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, "create table t (id bigint primary key, email text);",
                   [link("t", "t", ["id"])])
    rig.execute("a", "insert into sync.queue (link, side, op, source, event_id, topic, payload) "
                     "values ('t', 'a', 'W', 'ghost', 'e1', 'x', '{}')")
    try:
        rig.start_bridge()
        wait_until(lambda: "source=ghost queued=1" in rig.log_text(), 30, "the ghost source")
        assert "event=webhook_source_not_drained" in rig.log_text()
        with open(rig.config_path, "a") as f:
            f.write('\n[webhooks.sources.newshop]\nprovider = "shopify"\n'
                    'secret_env = "WH_SHOP_SECRET"\n[[webhooks.sources.newshop.topics]]\n'
                    'topic = "*"\ntable = "public.t"\nkey = "id"\ncolumns = { id = "id" }\n')
        assert rig.proc is not None
        rig.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "source=newshop" in rig.log_text(), 30, "the SIGHUP note")
        assert rig.proc.poll() is None  # SIGHUP no longer kills the bridge
        line = next(x for x in rig.log_text().splitlines() if "source=newshop" in x)
        assert "level=WARNING" in line and "restart" in line
        # a broken file on reload is refused, the bridge keeps running
        Path(rig.config_path).write_text(rig.config_path.read_text() + "\nbogus = 1\n")
        rig.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "event=reload_refused" in rig.log_text(), 30, "the refused reload")
        assert rig.proc.poll() is None
    finally:
        rig.close()
