"""Webhooks end to end, through the real processes: `syncbridge webhooks`
receives signed deliveries, `syncbridge run` applies them to the mapped table
on peer a, and capture carries each row on to peer b."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest
from webhook_support import PATIENTS_DDL, SECRETS, make_config, signed

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import toml_value, wait_until

SOURCES = ["shop", "lms", "portal", "gh", "std"]


def _webhooks_toml() -> str:
    """The test sources of webhook_support, as a [webhooks] section of a config file."""
    hooks = make_config("postgresql://unused/x").raw["webhooks"]
    out = ["[webhooks]"]
    out += [f"{k} = {toml_value(v)}" for k, v in hooks.items() if k != "sources"]
    for name, body in hooks["sources"].items():
        out.append(f"\n[webhooks.sources.{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in body.items() if k != "topics"]
        for topic in body["topics"]:
            out.append(f"\n[[webhooks.sources.{name}.topics]]")
            out += [f"{k} = {toml_value(v)}" for k, v in topic.items()]
    return "\n".join(out) + "\n"


@pytest.fixture
def rig(new_db, tmp_path):
    r = make_rig(new_db, tmp_path, PATIENTS_DDL, [link("patients", "patients", ["id"])])
    with open(r.config_path, "a") as f:
        f.write("\n" + _webhooks_toml())
    yield r
    r.close()


def test_signed_events_reach_the_other_peer(rig):
    env = {**os.environ, **SECRETS}
    rig.start_bridge(SECRETS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = subprocess.Popen([sys.executable, "-m", "syncbridge.bridge.cli", "--config",
                            str(rig.config_path), "webhooks", "--port", str(port)],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), 30, "the webhook app")
        for i, source in enumerate(SOURCES, start=1):
            record = {"id": i, "email": f"p{i}@example.org", "name": f"Name {i} ✓",
                      "updated_at": "2026-11-25T10:00:00.123456+00:00"}
            body, headers = signed(source, record, event_id=f"e2e-{i}")
            answer = httpx.post(f"{url}/webhooks/{source}", content=body, headers=headers)
            assert answer.status_code == 202, (source, answer.text)
        # a stale redelivery of event 1 with an older version changes nothing
        old = {"id": 1, "email": "old@example.org", "name": "old",
               "updated_at": "2026-11-24T10:00:00+00:00"}
        body, headers = signed("shop", old, event_id="e2e-old")
        assert httpx.post(f"{url}/webhooks/shop", content=body, headers=headers).status_code == 202
        # all six events drained (counted in the same transaction that deletes them from
        # the queue) before we look at what the stale one did
        drained = "select coalesce(sum(applied + stale + dead), 0) from sync.webhook_counters"
        wait_until(lambda: rig.query("a", drained) == [(len(SOURCES) + 1,)], 30,
                   "every event, the stale redelivery too, to be drained")
        assert rig.query("a", "select count(*) from sync.queue where op = 'W'") == [(0,)]
        assert rig.query("a", "select applied, stale, dead from sync.webhook_counters "
                              "where source = 'shop'") == [(1, 1, 0)]
        wait_until(lambda: len(rig.rows("b", "patients", ["id"])) == len(SOURCES), 30,
                   "every event on peer b")
        rig.wait_drained()
        rig.wait_equal({"patients": ["id"]})
        assert rig.rows("a", "patients", ["id"])[0][1] == "p1@example.org"
        assert rig.rows("b", "patients", ["id"])[0][1] == "p1@example.org"
        assert rig.rows("b", "patients", ["id"])[1][2] == "Name 2 ✓"
    finally:
        app.terminate()
        app.wait(15)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
