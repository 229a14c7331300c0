"""The `[webhooks]` section of the config: sources, their secrets, topic maps.

Parsed separately from the core config so the core never needs to know about
providers. Every problem is one `ConfigError` naming the source, the topic
and the field, raised before the app answers its first request. Secrets come
only from the environment or a systemd credential file: the config file may
be world-readable, so a literal secret in it is refused.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, ConfigError

PROVIDERS = ("shopify", "thinkific", "supabase", "hmac", "standard")

WEBHOOK_DEFAULTS: dict[str, Any] = {
    "max_body_bytes": 1_048_576,  # bytes; 1 MiB, Shopify's own payload cap is smaller
    "tolerance_seconds": 300,  # seconds a Standard Webhooks timestamp may be off
    "retention_days": 30,  # days the dedupe record of an event is kept
    "pool_max_size": 10,  # hub connections of the webhook app
    "db_timeout": 5.0,  # seconds to get a hub connection before answering 503
}

# Where each provider puts the row inside the payload (dotted path, "" = body);
# a topic may override it with `root`.
DEFAULT_ROOT = {"shopify": "", "thinkific": "payload", "supabase": "record",
                "hmac": "", "standard": "data"}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_SOURCE_KEYS = {"provider", "secret_env", "secret_credential", "header", "prefix", "encoding",
                "id_header", "id_field", "topic_header", "topic_field", "tolerance_seconds",
                "topics"}
_TOPIC_KEYS = {"topic", "link", "side", "key", "version", "columns", "delete", "root"}


@dataclass(frozen=True)
class TopicMap:
    """How one topic's payload becomes a row of one side of one link."""

    topic: str  # exact topic, or a glob such as "*" or "*:public.patients"
    link: str
    side: str
    key: tuple[str, ...]  # JSON paths of the key fields
    columns: dict[str, str]  # table column -> JSON path
    version: str | None  # JSON path ordering versions of a row
    delete: bool
    root: str | None  # None = the provider's default

    def matches(self, topic: str) -> bool:
        return fnmatch.fnmatchcase(topic, self.topic)

    def column_of(self, path: str) -> str:
        return next(c for c, p in self.columns.items() if p == path)


@dataclass(frozen=True)
class Source:
    """One webhook sender, reached at POST /webhooks/<name>."""

    name: str
    provider: str
    secret: bytes = field(repr=False)  # never logged
    topics: tuple[TopicMap, ...]
    header: str | None = None  # hmac / supabase: header carrying signature or secret
    prefix: str = ""  # hmac: text before the digest, e.g. "sha256="
    encoding: str = "hex"  # hmac: hex | base64
    id_header: str | None = None  # hmac: header with the delivery id
    id_field: str | None = None  # hmac: body path with the event id
    topic_header: str | None = None  # hmac: header with the topic
    topic_field: str | None = None  # hmac / standard: body path with the topic
    tolerance_seconds: int = WEBHOOK_DEFAULTS["tolerance_seconds"]

    def mapping(self, topic: str) -> TopicMap | None:
        return next((t for t in self.topics if t.matches(topic)), None)

    def find(self, topic: str, link: str, side: str) -> TopicMap | None:
        """The map a queued event was accepted under (the drain looks it up again)."""
        return next((t for t in self.topics
                     if t.matches(topic) and t.link == link and t.side == side), None)


@dataclass(frozen=True)
class WebhookConfig:
    sources: dict[str, Source]
    max_body_bytes: int
    retention_days: int
    pool_max_size: int
    db_timeout: float


def parse_webhooks(config: Config, secrets: bool = True) -> WebhookConfig:
    """The [webhooks] section; `secrets=False` skips reading them (the drain needs none)."""
    body = config.raw.get("webhooks", {})
    if not isinstance(body, dict):
        raise ConfigError("[webhooks] must be a table")
    unknown = set(body) - set(WEBHOOK_DEFAULTS) - {"sources"}
    if unknown:
        raise ConfigError(f"[webhooks] has unknown settings: {', '.join(sorted(unknown))}")

    def setting(name: str) -> Any:
        value = body.get(name, WEBHOOK_DEFAULTS[name])
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"[webhooks] {name} must be a positive number, not {value!r}")
        return value

    sources = {name: _source(name, src, config, secrets)
               for name, src in body.get("sources", {}).items()}
    return WebhookConfig(sources, int(setting("max_body_bytes")), int(setting("retention_days")),
                         int(setting("pool_max_size")), float(setting("db_timeout")))


def _source(name: str, body: Any, config: Config, secrets: bool) -> Source:
    where = f"webhook source {name!r}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name must be letters, digits, _ or - (it is a URL path)")
    if not isinstance(body, dict):
        raise ConfigError(f"{where} must be a table")
    if "secret" in body:
        raise ConfigError(f"{where}: a literal secret is not allowed in the config file; "
                          "use secret_env or secret_credential")
    unknown = set(body) - _SOURCE_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    provider = body.get("provider")
    if provider not in PROVIDERS:
        raise ConfigError(f"{where}: provider {provider!r} is not one of {PROVIDERS}")
    if provider == "hmac" and not body.get("header"):
        raise ConfigError(f"{where}: provider hmac needs header (e.g. 'X-Hub-Signature-256')")
    encoding = body.get("encoding", "hex")
    if encoding not in ("hex", "base64"):
        raise ConfigError(f"{where}: encoding {encoding!r} is not hex or base64")
    topics = body.get("topics")
    if not isinstance(topics, list) or not topics:
        raise ConfigError(f"{where} needs at least one [[webhooks.sources.{name}.topics]]")
    tolerance = body.get("tolerance_seconds", WEBHOOK_DEFAULTS["tolerance_seconds"])
    if not isinstance(tolerance, int) or tolerance <= 0:
        raise ConfigError(f"{where}: tolerance_seconds must be a positive integer")
    return Source(
        name=name,
        provider=provider,
        secret=_secret(where, provider, body) if secrets else b"",
        topics=tuple(_topic(where, t, config) for t in topics),
        header=body.get("header") or ("x-webhook-secret" if provider == "supabase" else None),
        prefix=str(body.get("prefix", "")),
        encoding=encoding,
        id_header=body.get("id_header"),
        id_field=body.get("id_field"),
        topic_header=body.get("topic_header"),
        topic_field=body.get("topic_field") or ("type" if provider == "standard" else None),
        tolerance_seconds=tolerance,
    )


def _secret(where: str, provider: str, body: dict[str, Any]) -> bytes:
    """The signing key as bytes; Standard Webhooks keys are `whsec_<base64>`."""
    if "secret_env" in body:
        value = os.environ.get(str(body["secret_env"]), "")
        if not value:
            raise ConfigError(f"{where}: environment variable {body['secret_env']} is not set")
    elif "secret_credential" in body:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(f"{where}: secret_credential needs systemd LoadCredential "
                              "(CREDENTIALS_DIRECTORY is not set)")
        path = Path(directory) / str(body["secret_credential"])
        try:
            value = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read credential {path.name}: "
                              f"{e.strerror}") from None
    else:
        raise ConfigError(f"{where} has no secret_env or secret_credential")
    if provider == "standard":
        from .webhook_verify import standard_key

        try:
            return standard_key(value)
        except ValueError:
            raise ConfigError(f"{where}: the Standard Webhooks secret must be "
                              "whsec_<base64>") from None
    return value.encode()


def _topic(where: str, body: Any, config: Config) -> TopicMap:
    if not isinstance(body, dict) or not isinstance(body.get("topic"), str) or not body["topic"]:
        raise ConfigError(f"{where}: every topics entry needs a topic")
    where = f"{where} topic {body['topic']!r}"
    unknown = set(body) - _TOPIC_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    link = config.links.get(str(body.get("link")))
    if link is None:
        raise ConfigError(f"{where}: link {body.get('link')!r} is not a configured link")
    side = body.get("side")
    if side not in ("a", "b"):
        raise ConfigError(f"{where}: side must be 'a' or 'b', not {side!r}")
    peer = config.peers[link.side(side).peer]
    if peer.dialect != "postgres":
        raise ConfigError(f"{where}: side {side} of link {link.name!r} is on peer {peer.name!r} "
                          f"({peer.dialect}); webhook rows can only be written to postgres")
    columns = body.get("columns")
    if not isinstance(columns, dict) or not columns or not all(
            isinstance(c, str) and isinstance(p, str) and p for c, p in columns.items()):
        raise ConfigError(f"{where}: columns must map table column names to JSON field paths")
    key = body.get("key")
    keys = (key,) if isinstance(key, str) else tuple(key) if isinstance(key, list) else ()
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError(f"{where}: key must name the JSON field (or fields) of the row's key")
    for label, path in [*(("key", k) for k in keys), ("version", body.get("version"))]:
        if path is not None and path not in columns.values():
            raise ConfigError(f"{where}: {label} field {path!r} is not one of the mapped "
                              "columns' fields")
    root = body.get("root")
    if root is not None and not isinstance(root, str):
        raise ConfigError(f"{where}: root must be a JSON field path ('' for the whole body)")
    return TopicMap(
        topic=body["topic"], link=link.name, side=side, key=keys, columns=dict(columns),
        version=body.get("version"), delete=bool(body.get("delete", False)), root=root,
    )
