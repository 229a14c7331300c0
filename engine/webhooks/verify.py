"""Who sent a webhook, and which event it is: signatures, event ids, topics.

The one place webhook signatures are checked: bridge/webhook_app.py calls
`verify` on every request before anything is parsed or stored, then
`parse_body` and `identify`.

Every check runs on the raw body before it is parsed, and every comparison is
`hmac.compare_digest`, so neither a parser nor timing tells an attacker
anything. Provider schemes (verified against their docs, see docs/webhooks.md):

- shopify:   X-Shopify-Hmac-Sha256 = base64(HMAC-SHA256(secret, body));
             id X-Shopify-Event-Id (same on every retry), topic X-Shopify-Topic.
- thinkific: X-Thinkific-Hmac-Sha256 = hex(HMAC-SHA256(secret, body)), keyed with
             the site's API key or the app's client secret; id and
             resource.action come from the (signed) body.
- supabase:  database webhooks are not signed; a shared secret is sent in a
             header you add to the hook (default X-Webhook-Secret, or
             Authorization: Bearer <secret>). No id: sha256 of the body.
- hmac:      GitHub style, e.g. X-Hub-Signature-256: sha256=<hex>; header,
             prefix, encoding, id and topic locations are configurable.
- standard:  Standard Webhooks: webhook-signature holds space-separated
             v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>, key is
             base64 after whsec_; timestamps outside the tolerance are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from syncbridge.engine.webhooks.model import Source

MAX_EVENT_ID = 200  # characters; longer ids are hashed so the dedupe index stays small


class SignatureError(Exception):
    """The request is not provably from the source: answer 401."""


class EventError(ValueError):
    """The verified body cannot be used; `field` names what is wrong: answer 400."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret `whsec_<base64>` (prefix optional, as in
    the reference libraries)."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


def _digest(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _same(expected: str, given: str) -> bool:
    # Starlette decodes header bytes as latin-1, so this never fails
    return hmac.compare_digest(expected.encode(), given.encode("latin-1", "replace"))


def verify(source: Source, headers: Mapping[str, str], body: bytes,
           now: float | None = None) -> None:
    """Raise SignatureError unless `body` is signed by `source`; header names lowercase."""
    check = _VERIFIERS[source.provider]
    if not check(source, headers, body, time.time() if now is None else now):
        raise SignatureError("signature does not verify")


def _shopify(source: Source, h: Mapping[str, str], body: bytes, now: float) -> bool:
    expected = base64.b64encode(_digest(source.secret, body)).decode()
    return _same(expected, h.get("x-shopify-hmac-sha256", "").strip())


def _thinkific(source: Source, h: Mapping[str, str], body: bytes, now: float) -> bool:
    expected = _digest(source.secret, body).hex()
    return _same(expected, h.get("x-thinkific-hmac-sha256", "").strip().lower())


def _supabase(source: Source, h: Mapping[str, str], body: bytes, now: float) -> bool:
    assert source.header is not None
    given = h.get(source.header.lower(), "")
    if source.header.lower() == "authorization":
        # exactly what docs/webhooks.md says: "Bearer <secret>", the scheme in any case
        # (RFC 9110 section 11.1); a bare secret in Authorization is refused
        scheme, _, given = given.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = given.strip()
    return hmac.compare_digest(source.secret, given.encode("latin-1", "replace"))


def _hmac(source: Source, h: Mapping[str, str], body: bytes, now: float) -> bool:
    assert source.header is not None
    given = h.get(source.header.lower(), "").strip()
    if not given.startswith(source.prefix):
        return False
    given = given.removeprefix(source.prefix)
    digest = _digest(source.secret, body)
    if source.encoding == "hex":
        return _same(digest.hex(), given.lower())
    return _same(base64.b64encode(digest).decode(), given)


def _standard(source: Source, h: Mapping[str, str], body: bytes, now: float) -> bool:
    msg_id, stamp = h.get("webhook-id", ""), h.get("webhook-timestamp", "")
    signatures = h.get("webhook-signature", "")
    if not msg_id or not stamp.isascii() or not stamp.isdigit() or not signatures:
        return False
    if abs(now - int(stamp)) > source.tolerance_seconds:
        return False  # replayed, or a clock far off: refuse either way
    signed = f"{msg_id}.{stamp}.".encode("latin-1", "replace") + body
    expected = base64.b64encode(_digest(source.secret, signed)).decode()
    found = False
    for entry in signatures.split():
        version, _, sig = entry.partition(",")
        # no early exit: every entry is compared, so timing says nothing about which matched
        found |= version == "v1" and _same(expected, sig)
    return found


_VERIFIERS = {"shopify": _shopify, "thinkific": _thinkific, "supabase": _supabase,
              "hmac": _hmac, "standard": _standard}


def parse_body(body: bytes) -> dict[str, Any]:
    """The verified body as a JSON object; EventError when it is anything else."""
    try:
        parsed = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EventError(f"body is not valid UTF-8 JSON: {type(e).__name__}") from None
    if not isinstance(parsed, dict):
        raise EventError("body must be a JSON object")
    return parsed


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN/Infinity; Postgres does not


def identify(source: Source, headers: Mapping[str, str], body: bytes,
             parsed: dict[str, Any]) -> tuple[str, str]:
    """(event id, topic) of a verified event; EventError naming what is missing."""
    p = source.provider
    if p == "shopify":
        # Shopify's dedupe guide names X-Shopify-Event-Id (same on every retry); the
        # webhook id is a fallback. Scoped by topic: one event may feed several topics.
        event_id = headers.get("x-shopify-event-id") or headers.get("x-shopify-webhook-id")
        topic = headers.get("x-shopify-topic")
        if not topic:
            raise EventError("missing X-Shopify-Topic header", "X-Shopify-Topic")
        event_id = f"{topic}:{event_id}" if event_id else None
    elif p == "thinkific":
        event_id = _text(parsed.get("id"))
        resource, action = parsed.get("resource"), parsed.get("action")
        topic = (f"{resource}.{action}" if isinstance(resource, str) and isinstance(action, str)
                 else headers.get("x-thinkific-topic"))
        if not topic:
            raise EventError("missing resource/action in body", "resource")
    elif p == "supabase":
        event_id = None
        kind, schema, table = parsed.get("type"), parsed.get("schema"), parsed.get("table")
        if not all(isinstance(v, str) for v in (kind, schema, table)):
            raise EventError("missing type/schema/table in body", "type")
        topic = f"{kind}:{schema}.{table}"
    elif p == "standard":
        event_id = headers.get("webhook-id")
        topic = _topic_field(source, parsed)
    else:
        event_id = (headers.get(source.id_header.lower()) if source.id_header
                    else _text(lookup(parsed, source.id_field)) if source.id_field else None)
        topic = (headers.get(source.topic_header.lower(), "") if source.topic_header
                 else _topic_field(source, parsed) if source.topic_field else "")
    if not event_id:
        event_id = "sha256:" + hashlib.sha256(body).hexdigest()
    elif len(event_id) > MAX_EVENT_ID:
        event_id = "sha256:" + hashlib.sha256(event_id.encode("utf-8", "replace")).hexdigest()
    return event_id, topic


def _topic_field(source: Source, parsed: dict[str, Any]) -> str:
    assert source.topic_field is not None
    topic = lookup(parsed, source.topic_field)
    if not isinstance(topic, str) or not topic:
        raise EventError(f"missing topic field {source.topic_field!r}", source.topic_field)
    return topic


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


_MISSING = object()


def lookup(obj: Any, path: str | None, default: Any = None) -> Any:
    """obj at a dotted path ("customer.email", "line_items.0.id"); default when absent."""
    if path is None:
        return default
    if path == "":
        return obj
    for part in path.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return default
    return obj
