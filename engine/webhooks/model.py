"""The parsed `[webhooks]` section: sources, their topic maps, the whole section.

Plain frozen dataclasses with no behaviour beyond lookups, so that config.py
(which builds them), verify.py (which checks signatures against a Source) and
map.py (which maps payloads by a TopicMap) all import them from here, and none
of those modules imports another in a cycle.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from syncbridge.engine.config import Side
from syncbridge.engine.config_file import WEBHOOK_DEFAULTS

PROVIDERS = ("shopify", "thinkific", "supabase", "hmac", "standard")

# Where each provider puts the row inside the payload (dotted path, "" = body);
# a topic may override it with `root`.
DEFAULT_ROOT = {"shopify": "", "thinkific": "payload", "supabase": "record",
                "hmac": "", "standard": "data"}

@dataclass(frozen=True)
class TopicMap:
    """How one topic's payload becomes a row of one side of one link, or of a plain table
    (then `link` is `table_link(target)` and `side` is 'a')."""

    topic: str  # exact topic, or a glob such as "*" or "*:public.patients"
    link: str
    side: str
    key: tuple[str, ...]  # JSON paths of the key fields
    columns: dict[str, str]  # table column -> JSON path
    version: str | None  # JSON path ordering versions of a row
    delete: bool
    root: str | None  # None = the provider's default
    target: Side | None = None  # a plain table (no link); None = the link's side

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
