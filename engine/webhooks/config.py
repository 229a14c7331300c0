"""The `[webhooks]` section of the config: sources, their secrets, topic maps.

Parsed separately from the core config so the core never needs to know about
providers. Every problem is one `ConfigError` naming the source, the topic
and the field, raised before the app answers its first request. Secrets come
only from the environment or a systemd credential file: the config file may
be world-readable, so a literal secret in it is refused.

The parsed result (WebhookConfig, Source, TopicMap) is defined in model.py,
which verify.py and map.py import too.
"""

from __future__ import annotations

import os
import re

from syncbridge.engine.config import Config, ConfigError, Side, credential
from syncbridge.engine.config_file import WEBHOOK_DEFAULTS, SourceFile, TopicFile
from syncbridge.engine.webhooks.model import PROVIDERS, Source, TopicMap, WebhookConfig
from syncbridge.engine.webhooks.verify import standard_key

__all__ = ["WEBHOOK_DEFAULTS", "PROVIDERS", "parse_webhooks"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")


def parse_webhooks(config: Config, secrets: bool = True) -> WebhookConfig:
    """The [webhooks] section; `secrets=False` skips reading them (the drain needs none).

    Keys and types were checked by the config model (engine/config.py); what
    is left here is what needs the links and the provider."""
    body = config.webhooks
    sources = {name: _source(name, src, body.tolerance_seconds, config, secrets)
               for name, src in body.sources.items()}
    return WebhookConfig(sources, body.max_body_bytes, body.retention_days,
                         body.pool_max_size, body.db_timeout)


def _source(name: str, body: SourceFile, tolerance: int, config: Config,
            secrets: bool) -> Source:
    where = f"webhook source {name!r}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name must be letters, digits, _ or - (it is a URL path)")
    if body.secret is not None:
        raise ConfigError(f"{where}: a literal secret is not allowed in the config file; "
                          "use secret_env or secret_credential")
    provider = body.provider
    if provider == "hmac" and not body.header:
        raise ConfigError(f"{where}: provider hmac needs header (e.g. 'X-Hub-Signature-256')")
    return Source(
        name=name,
        provider=provider,
        secret=_secret(where, provider, body) if secrets else b"",
        topics=tuple(_topic(where, t, config) for t in body.topics),
        header=body.header or ("x-webhook-secret" if provider == "supabase" else None),
        prefix=body.prefix,
        encoding=body.encoding,
        id_header=body.id_header,
        id_field=body.id_field,
        topic_header=body.topic_header,
        topic_field=body.topic_field or ("type" if provider == "standard" else None),
        tolerance_seconds=body.tolerance_seconds or tolerance,
    )


def _secret(where: str, provider: str, body: SourceFile) -> bytes:
    """The signing key as bytes; Standard Webhooks keys are `whsec_<base64>`."""
    if body.secret_env is not None:
        value = os.environ.get(body.secret_env, "")
        if not value:
            raise ConfigError(f"{where}: environment variable {body.secret_env} is not set")
    elif body.secret_credential is not None:
        value = credential(where, body.secret_credential)
    else:
        raise ConfigError(f"{where} has no secret_env or secret_credential")
    if provider == "standard":
        try:
            return standard_key(value)
        except ValueError:
            raise ConfigError(f"{where}: the Standard Webhooks secret must be "
                              "whsec_<base64>") from None
    return value.encode()


def _topic(where: str, body: TopicFile, config: Config) -> TopicMap:
    where = f"{where} topic {body.topic!r}"
    if (body.link is None) == (body.table is None):
        raise ConfigError(f"{where}: set either link and side, or table (a plain table)")
    if body.table is not None:
        if body.side is not None:
            raise ConfigError(f"{where}: side is for a link; a plain table has none")
        peer_name = body.peer or config.hub
        if peer_name not in config.peers:
            raise ConfigError(f"{where}: peer {peer_name!r} is not a configured peer")
        schema, _, table = body.table.rpartition(".")
        target: Side | None = Side(peer_name, schema or "public", table)
        link_name, side = table_link(target), "a"
        peer = config.peers[peer_name]
    else:
        link = config.links.get(str(body.link))
        if link is None:
            raise ConfigError(f"{where}: link {body.link!r} is not a configured link")
        if body.side is None:
            raise ConfigError(f"{where}: side is required with link ('a' or 'b')")
        if body.peer is not None:
            raise ConfigError(f"{where}: peer is for a plain table; a link's side has its own")
        side, target, link_name = body.side, None, link.name
        peer = config.peers[link.side(side).peer]
    if peer.dialect != "postgres":
        raise ConfigError(f"{where}: the target table is on peer {peer.name!r} "
                          f"({peer.dialect}); webhook rows can only be written to postgres")
    columns = body.columns
    if not columns or not all(c and p for c, p in columns.items()):
        raise ConfigError(f"{where}: columns must map table column names to JSON field paths")
    keys = tuple(body.key)
    if not keys or not all(keys):
        raise ConfigError(f"{where}: key must name the JSON field (or fields) of the row's key")
    for label, path in [*(("key", k) for k in keys), ("version", body.version)]:
        if path is not None and path not in columns.values():
            raise ConfigError(f"{where}: {label} field {path!r} is not one of the mapped "
                              "columns' fields")
    return TopicMap(
        topic=body.topic, link=link_name, side=side, key=keys, columns=dict(columns),
        version=body.version, delete=body.delete, root=body.root, target=target,
    )


def table_link(target: Side) -> str:
    """The queue's link name for events into a plain table: never a link's name (it has
    dots), so sync.queue, sync.dead_letter and retry_webhook_v1 work unchanged."""
    return f"{target.peer}.{target.qualified}"


def targets(config: Config, wh: WebhookConfig) -> list[tuple[str, TopicMap, Side]]:
    """(where, topic map, table) of every webhook topic, for checks against the catalog."""
    out = []
    for source in wh.sources.values():
        for t in source.topics:
            side = t.target or config.links[t.link].side(t.side)
            out.append((f"webhook source {source.name!r} topic {t.topic!r}", t, side))
    return out
