"""Config parsing, signature schemes and payload mapping, without a server."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
from typing import Any

import pytest
from webhook_support import SECRETS, make_config

from syncbridge.engine.config import Config, ConfigError, parse
from syncbridge.engine.webhooks.config import parse_webhooks
from syncbridge.engine.webhooks.map import map_event
from syncbridge.engine.webhooks.verify import (
    EventError,
    SignatureError,
    identify,
    parse_body,
    verify,
)


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def _raw() -> dict[str, Any]:
    raw = copy.deepcopy(make_config("postgresql://x@127.0.0.1/hub").raw)
    raw["peers"]["clinic"] = {"dsn": "Driver=x", "dialect": "sqlserver"}
    raw["links"].append({"name": "visits", "key": ["id"],
                         "a": {"peer": "clinic", "table": "visits"},
                         "b": {"peer": "hub", "table": "visits"}})
    return raw


def _config(raw: dict[str, Any]) -> Config:
    return parse(raw)


def _error(mutate) -> str:
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_webhooks(_config(raw))
    return str(info.value)


def _shop(raw: dict[str, Any]) -> dict[str, Any]:
    return raw["webhooks"]["sources"]["shop"]


def test_valid_config_parses_every_provider():
    wh = parse_webhooks(_config(_raw()))
    assert {s.provider for s in wh.sources.values()} == {"shopify", "thinkific", "supabase",
                                                          "hmac", "standard"}
    assert wh.max_body_bytes == 65536
    assert "secret" not in repr(wh.sources["shop"]).replace("secret_", "")  # never printed


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda r: _shop(r).update(secret="literal"), ["'shop'", "literal secret"]),
    (lambda r: _shop(r).pop("secret_env"), ["'shop'", "secret_env"]),
    (lambda r: _shop(r).update(secret_env="WH_UNSET_VAR"), ["'shop'", "WH_UNSET_VAR"]),
    (lambda r: _shop(r).update(provider="stripe"), ["'shop'", "'stripe'"]),
    (lambda r: _shop(r)["topics"][0].update(link="nope"), ["customers/update", "'nope'"]),
    (lambda r: _shop(r)["topics"][0].update(side="c"), ["customers/update", "side"]),
    (lambda r: _shop(r)["topics"][0].update(link="visits"), ["customers/update", "sqlserver"]),
    (lambda r: _shop(r)["topics"][0].update(key="customer_id"), ["customers/update",
                                                                  "key field 'customer_id'"]),
    (lambda r: _shop(r)["topics"][0].update(version="ts"), ["customers/update", "version"]),
    (lambda r: _shop(r)["topics"][0].update(colums={}), ["customers/update", "colums"]),
    (lambda r: _shop(r).update(topics=[]), ["'shop'", "topics"]),
    (lambda r: r["webhooks"].update(max_body_bytes=-1), ["max_body_bytes"]),
    (lambda r: r["webhooks"]["sources"]["std"].update(secret_env="WH_SHOP_SECRET"),
     ["'std'", "whsec_"]),
    (lambda r: r["webhooks"]["sources"]["gh"].pop("header"), ["'gh'", "header"]),
])
def test_config_errors_name_source_topic_and_field(mutate, words):
    message = _error(mutate)
    for word in words:
        assert word in message, message


def test_secret_from_systemd_credential(tmp_path, monkeypatch):
    (tmp_path / "shop").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    raw = _raw()
    _shop(raw).pop("secret_env")
    _shop(raw)["secret_credential"] = "shop"
    assert parse_webhooks(_config(raw)).sources["shop"].secret == b"from-credential"


def test_standard_webhooks_reference_vector():
    """The Standard Webhooks specification's published test vector."""
    raw = _raw()
    raw["webhooks"]["sources"]["std"]["secret_env"] = "WH_VECTOR"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WH_VECTOR", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        source = parse_webhooks(_config(raw)).sources["std"]
    body = b'{"test": 2432232314}'
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": "v1,bm90IGl0 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
    verify(source, headers, body, now=1614265330 + 10)
    with pytest.raises(SignatureError):
        verify(source, headers, body, now=1614265330 + 301)
    with pytest.raises(SignatureError):
        verify(source, headers, body.replace(b"2", b"3"), now=1614265330)
    with pytest.raises(SignatureError):
        verify(source, dict(headers, **{"webhook-id": "msg_other"}), body, now=1614265330)


def test_shopify_and_thinkific_encodings():
    wh = parse_webhooks(_config(_raw()))
    body = b'{"id": 1}'
    mac = hmac.new(SECRETS["WH_SHOP_SECRET"].encode(), body, hashlib.sha256).digest()
    verify(wh.sources["shop"], {"x-shopify-hmac-sha256": base64.b64encode(mac).decode()}, body)
    with pytest.raises(SignatureError):  # hex is Thinkific's encoding, not Shopify's
        verify(wh.sources["shop"], {"x-shopify-hmac-sha256": mac.hex()}, body)
    mac = hmac.new(SECRETS["WH_THINKIFIC_SECRET"].encode(), body, hashlib.sha256).digest()
    verify(wh.sources["lms"], {"x-thinkific-hmac-sha256": mac.hex().upper()}, body)
    with pytest.raises(SignatureError):
        verify(wh.sources["lms"], {"x-thinkific-hmac-sha256": base64.b64encode(mac).decode()},
               body)


def test_identify_and_map():
    wh = parse_webhooks(_config(_raw()))
    supa = wh.sources["portal"]
    body = (b'{"type": "DELETE", "table": "patients", "schema": "public", "record": null,'
            b' "old_record": {"id": 3, "email": null}}')
    parsed = parse_body(body)
    event_id, topic = identify(supa, {}, body, parsed)
    assert topic == "DELETE:public.patients" and event_id.startswith("sha256:")
    assert identify(supa, {}, body, parsed)[0] == event_id  # stable across redeliveries
    tmap = supa.mapping(topic)
    assert tmap is not None and tmap.delete
    mapped = map_event(supa, tmap, parsed)
    assert mapped.key == {"id": 3} and mapped.row == {"id": 3, "email": None}

    gh = wh.sources["gh"]
    long_id = "x" * 1000
    event_id, topic = identify(gh, {"x-github-delivery": long_id, "x-github-event": "push"},
                               b"{}", {})
    assert len(event_id) < 100 and topic == "push"
    with pytest.raises(EventError) as info:
        map_event(gh, gh.topics[0], {"email": "a"})
    assert info.value.field == "id"


@pytest.mark.parametrize("body", [b"", b"[]", b"NaN", b'{"a": NaN}', b"\xff{}", b'"x"',
                                  b"[" * 100000])
def test_parse_body_refuses_non_objects(body):
    with pytest.raises(EventError):
        parse_body(body)
