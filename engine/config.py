"""Typed configuration: peers, links, rules, webhooks and bridge settings from one TOML file.

The file is validated by one strict pydantic model (`ConfigFile` below): an
unknown key anywhere is an error with a did-you-mean, a value of the wrong type
is an error naming where it is, and every default is a field default here (the
README's configuration section lists the same values). `[bridge]` settings
that a link may also set (`LINK_OVERRIDABLE`) are the defaults of every link
that does not set its own.

Adding a setting is one line: a field with its default and a unit comment in
`BridgeSettings` (read with `config.setting("name")`), `PeerFile` (read with
`peer.settings["name"]`), `LinkFile` or `WebhooksFile`.

The validated file is then resolved into the small frozen dataclasses the rest
of the code uses (`Config`, `Peer`, `Link`, `Side`). Secrets (DSNs) may come
from the environment or from a systemd credential file so that the config file
itself can be world-readable.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

DIALECTS = ("postgres", "sqlserver")
DIRECTIONS = ("a_to_b", "b_to_a", "both")
CONFLICT_POLICIES = ("a_wins", "b_wins", "newest_wins", "manual", "merge")
MERGE_FALLBACKS = ("a_wins", "b_wins", "newest_wins", "manual")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FUNCTION = re.compile(r"^function:[A-Za-z_][A-Za-z0-9_$]{0,62}\.[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """A configuration problem; the message names the link, peer and column."""


def seconds(text: Any) -> float:
    """'90s', '15m', '1h', '2d' or a number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise ConfigError(f"{text!r} is not a duration like 30s, 15m, 1h or 1d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _duration(value: Any) -> float:
    try:
        return seconds(value)
    except ConfigError as e:
        raise ValueError(str(e)) from None


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} must be a plain identifier (letters, digits, _)")
    return value


def _conflict(value: str) -> str:
    if value in CONFLICT_POLICIES or _FUNCTION.match(value):
        return value
    raise ValueError(f"conflict {value!r} is not one of {', '.join(CONFLICT_POLICIES)} "
                     "or function:<schema>.<function>")


Name = Annotated[str, AfterValidator(_name)]
Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Seconds = Annotated[int, Field(ge=0)]  # 0 = no limit
NonNegative = Annotated[float, Field(ge=0)]
Conflict = Annotated[str, AfterValidator(_conflict)]
MergeFallback = Literal["a_wins", "b_wins", "newest_wins", "manual"]
StrList = Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]


class _Strict(BaseModel):
    """Unknown keys are errors with a did-you-mean; values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if key not in known:
                    hint = difflib.get_close_matches(str(key), sorted(known), 1, 0.6)
                    also = f" (did you mean {hint[0]!r}?)" if hint else (
                        f" (expected one of: {', '.join(sorted(known))})")
                    raise ValueError(f"unknown key {key!r}{also}")
        return data


class BridgeSettings(_Strict):
    """`[bridge]`: every setting of the bridge process, with its default."""

    batch_size: PositiveInt = 1000  # signals claimed per batch (links may override)
    notify: bool = True  # pg_notify wake-up per captured statement (links may override)
    conflict: Conflict = "a_wins"  # two-way links' conflict policy (links may override)
    merge_fallback: MergeFallback = "a_wins"  # conflict = merge: policy for same-column edits
    newest_column: str | None = None  # conflict = newest_wins: timestamp column (links override)
    poll_interval: Positive = 0.05  # seconds; adaptive poll floor when notify is off
    max_poll_interval: Positive = 1.0  # seconds; adaptive poll ceiling when notify is off
    fallback_poll: Positive = 5.0  # seconds; safety poll when notify is on
    ct_poll_interval: Positive = 0.25  # seconds; SQL Server current-version check
    ct_retention_days: PositiveInt = 7  # SQL Server change retention install sets; warn at half
    mssql_login_timeout: Seconds = 15  # seconds; SQL Server login (pyodbc connect timeout=)
    mssql_query_timeout: Seconds = 300  # seconds; SQL Server statement (HYT00 when exceeded)
    mssql_lock_timeout: Seconds = 30  # seconds, 0 = none; SQL Server lock wait (SET LOCK_TIMEOUT)
    max_attempts: PositiveInt = 8  # deferrals of one key (e.g. FK not there yet) before dead letter
    stats_interval: Positive = 1.0  # seconds between queue-depth samples written to the hub
    log_keys: bool = True  # false: log lines carry a hash of each key instead of its values
    heartbeat_interval: Positive = 2.0  # seconds; a bridge is shown gone after two missed beats
    stall_after: Positive = 30.0  # seconds of queued work (or a canary) not arriving: `stalled`
    stale_after: Positive = 10.0  # seconds; an older depth sample of a non-hub queue is `stale`
    canary_interval: NonNegative = 5.0  # seconds between end-to-end canaries; 0 = off
    loop_stuck_after: Positive = 30.0  # seconds without a loop tick before /healthz says 503
    metrics: str = ""  # "host:port" serves /metrics and /healthz; "" = off
    applied_batches_days: Positive = 7.0  # days of sync.applied_batches kept on Postgres sinks
    check_runs_days: Positive = 30.0  # days of sync.check_runs (the last run per name is kept)
    resolved_conflicts_days: Positive = 30.0  # days resolved sync.conflicts are kept
    prune_interval: Positive = 3600.0  # seconds between pruning rounds


# [bridge] settings a link may set for itself; unset on the link = the [bridge] value.
LINK_OVERRIDABLE = ("batch_size", "notify", "conflict", "merge_fallback", "newest_column")


class PeerFile(_Strict):
    dialect: Literal["postgres", "sqlserver"] = "postgres"
    dsn: str | None = None  # literal DSN (the file is then a secret)
    dsn_env: str | None = None  # environment variable holding the DSN
    dsn_credential: str | None = None  # systemd LoadCredential name holding the DSN


class SideFile(_Strict):
    peer: str
    table: str  # "schema.table" or "table" (public / dbo)


class LinkFile(_Strict):
    name: Name
    a: SideFile
    b: SideFile
    key: Annotated[list[str], Field(min_length=1)]  # side-a column names of the primary key
    columns: dict[str, str] | None = None  # a column -> b column; None = all of a, same names
    exclude: list[str] = []
    direction: Literal["a_to_b", "b_to_a", "both"] = "a_to_b"
    conflict: Conflict | None = None
    merge_fallback: MergeFallback | None = None
    newest_column: str | None = None
    notify: bool | None = None
    batch_size: PositiveInt | None = None
    check_every: Duration | None = None  # the bridge runs `check` this often ("1h")
    repair: Literal["auto", "manual"] = "manual"  # auto: repair after a check that differed


class RuleFile(_Strict):
    name: str
    sql: str  # returns violating rows
    peer: str | None = None  # default: the hub


class TopicFile(_Strict):
    topic: Annotated[str, Field(min_length=1)]  # exact topic or a glob ("*", "orders/*")
    link: str | None = None  # the link whose side receives the row ...
    side: Literal["a", "b"] | None = None
    table: str | None = None  # ... or a plain table, with no link
    peer: str | None = None  # the plain table's peer (default: the hub)
    key: StrList  # JSON paths of the key fields
    columns: dict[str, str]  # table column -> JSON path
    version: str | None = None  # JSON path ordering versions of a row
    delete: bool = False
    root: str | None = None  # where the row sits in the payload; None = the provider's default


class SourceFile(_Strict):
    provider: Literal["shopify", "thinkific", "supabase", "hmac", "standard"]
    secret_env: str | None = None
    secret_credential: str | None = None
    secret: str | None = None  # refused with a reason (webhook_config): never in the file
    header: str | None = None
    prefix: str = ""
    encoding: Literal["hex", "base64"] = "hex"
    id_header: str | None = None
    id_field: str | None = None
    topic_header: str | None = None
    topic_field: str | None = None
    tolerance_seconds: PositiveInt | None = None  # default: [webhooks] tolerance_seconds
    topics: Annotated[list[TopicFile], Field(min_length=1)]


class WebhooksFile(_Strict):
    max_body_bytes: PositiveInt = 1_048_576  # bytes; 1 MiB, Shopify's own payload cap is smaller
    tolerance_seconds: PositiveInt = 300  # seconds a Standard Webhooks timestamp may be off
    retention_days: PositiveInt = 30  # days the dedupe record of an event is kept
    pool_max_size: PositiveInt = 10  # hub connections of the webhook app
    db_timeout: Positive = 5.0  # seconds to get a hub connection before answering 503
    sources: dict[str, SourceFile] = {}


class ConfigFile(_Strict):
    hub: str | None = None  # the postgres peer holding sync.*; default: first postgres peer
    bridge: BridgeSettings = BridgeSettings()
    peers: dict[str, PeerFile] = {}
    links: list[LinkFile] = []
    rules: list[RuleFile] = []
    webhooks: WebhooksFile = WebhooksFile()


DEFAULTS: dict[str, Any] = BridgeSettings().model_dump()
WEBHOOK_DEFAULTS: dict[str, Any] = WebhooksFile().model_dump(exclude={"sources"})


@dataclass(frozen=True)
class Peer:
    name: str
    dialect: str
    dsn: str = field(repr=False)  # may hold a password: never logged
    settings: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Side:
    peer: str
    schema: str
    table: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Link:
    name: str
    a: Side
    b: Side
    key: tuple[str, ...]  # key column names on side a
    columns: dict[str, str] | None  # a column -> b column; None = same names, all of a
    exclude: tuple[str, ...]
    direction: str
    conflict: str
    newest_column: str | None
    notify: bool
    batch_size: int
    merge_fallback: str = "a_wins"
    check_every: float | None = None  # seconds between background checks; None = never
    repair: str = "manual"  # "auto": repair after a background check that differed

    def side(self, name: str) -> Side:
        return self.a if name == "a" else self.b

    def directions(self) -> list[tuple[str, str]]:
        """(source side, sink side) pairs this link moves data along."""
        out = []
        if self.direction in ("a_to_b", "both"):
            out.append(("a", "b"))
        if self.direction in ("b_to_a", "both"):
            out.append(("b", "a"))
        return out


@dataclass(frozen=True)
class Config:
    peers: dict[str, Peer]
    links: dict[str, Link]
    hub: str
    settings: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    path: Path | None = None
    rules: tuple[RuleFile, ...] = ()
    webhooks: WebhooksFile = field(default_factory=WebhooksFile)

    @property
    def hub_peer(self) -> Peer:
        return self.peers[self.hub]

    def setting(self, name: str) -> Any:
        return self.settings[name]


def load(path: str | Path, hub_only: bool = False) -> Config:
    """The config in `path`; `hub_only` resolves only the hub's DSN (the webhook app)."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist (set --config or "
                          "SYNCBRIDGE_CONFIG)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read: {e.strerror}") from None
    try:
        cfg = parse(raw, hub_only=hub_only)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    return Config(cfg.peers, cfg.links, cfg.hub, cfg.settings, raw, p, cfg.rules, cfg.webhooks)


def parse(raw: dict[str, Any], hub_only: bool = False) -> Config:
    try:
        file = ConfigFile.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, raw)) from None
    if not file.peers:
        raise ConfigError("config names no [peers]")
    for name in file.peers:
        if not _NAME.match(name):
            raise ConfigError(f"peer name {name!r} must be a plain identifier")
    hub = file.hub or next((n for n, p in file.peers.items() if p.dialect == "postgres"), None)
    if hub is None or hub not in file.peers or file.peers[hub].dialect != "postgres":
        raise ConfigError(f"hub {hub!r} must name a postgres peer (it holds sync.status)")
    peers = {name: _peer(name, body, resolve=not hub_only or name == hub)
             for name, body in file.peers.items()}
    links: dict[str, Link] = {}
    for body in file.links:
        if body.name in links:
            raise ConfigError(f"link {body.name!r} is defined twice")
        links[body.name] = _link(body, file.bridge, peers)
    return Config(peers, links, hub, file.bridge.model_dump(), raw, None,
                  tuple(file.rules), file.webhooks)


# -- errors ------------------------------------------------------------------------------


def _explain(e: ValidationError, raw: dict[str, Any]) -> str:
    """The first problem as one line naming where it is; the count of the others."""
    errs = e.errors(include_url=False)
    first = _one(errs[0], raw)
    return first if len(errs) == 1 else f"{first} (and {len(errs) - 1} more problem(s))"


def _one(err: Any, raw: dict[str, Any]) -> str:
    where, field_path = _where(list(err["loc"]), raw)
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "missing":
        return f"{where}: {field_path} is required"
    if kind == "literal_error":
        return f"{where}: {field_path} {err['input']!r} is not one of {err['ctx']['expected']}"
    if kind == "value_error" and not field_path:
        return f"{where}: {msg}"
    shown = "" if isinstance(err.get("input"), dict | list) else f" = {err.get('input')!r}"
    return f"{where}: {field_path}{shown}: {msg}"


def _where(loc: list[Any], raw: Any) -> tuple[str, str]:
    """('links', 0, 'conflict') -> ("link 'patients'", 'conflict')."""

    def name_at(*path: Any) -> Any:
        node = raw
        for p in path:
            try:
                node = node[p]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    def rest(n: int) -> str:
        return ".".join(str(p) for p in loc[n:])

    head = loc[0] if loc else None
    if head == "links" and len(loc) > 1:
        name = name_at("links", loc[1], "name")
        return (f"link {name!r}" if name else f"links[{loc[1]}]"), rest(2)
    if head == "rules" and len(loc) > 1:
        name = name_at("rules", loc[1], "name")
        return (f"rule {name!r}" if name else f"rules[{loc[1]}]"), rest(2)
    if head == "peers" and len(loc) > 1:
        return f"peer {loc[1]!r}", rest(2)
    if loc[:2] == ["webhooks", "sources"] and len(loc) > 2:
        where = f"webhook source {loc[2]!r}"
        if len(loc) > 4 and loc[3] == "topics":
            topic = name_at("webhooks", "sources", loc[2], "topics", loc[4], "topic")
            return f"{where} topic {topic!r}" if topic else f"{where} topics[{loc[4]}]", rest(5)
        return where, rest(3)
    if head in ("bridge", "webhooks"):
        return f"[{head}]", rest(1)
    return "config", rest(0)


# -- resolution ----------------------------------------------------------------------------


def _peer(name: str, body: PeerFile, resolve: bool) -> Peer:
    sources = [k for k in ("dsn", "dsn_env", "dsn_credential") if getattr(body, k) is not None]
    if len(sources) != 1:
        raise ConfigError(f"peer {name!r} needs exactly one of dsn, dsn_env or dsn_credential"
                          + (f" (it has {', '.join(sources)})" if sources else ""))
    extra = body.model_dump(exclude={"dialect", "dsn", "dsn_env", "dsn_credential"})
    return Peer(name, body.dialect, _dsn(name, body) if resolve else "", extra)


def credential(where: str, name: str) -> str:
    """A systemd credential's text: $CREDENTIALS_DIRECTORY/name (--credentials-dir sets it)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(
            f"{where}: credential {name!r} needs CREDENTIALS_DIRECTORY, which systemd's "
            "LoadCredential sets; outside the unit run with --credentials-dir "
            "/etc/syncbridge/credentials (or set CREDENTIALS_DIRECTORY)")
    path = Path(directory) / name
    try:
        return path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read credential {name!r} in {directory}: "
                          f"{e.strerror}") from None


def _dsn(name: str, body: PeerFile) -> str:
    """DSN from the file, an environment variable, or a systemd credential."""
    if body.dsn is not None:
        return body.dsn
    if body.dsn_env is not None:
        value = os.environ.get(body.dsn_env)
        if not value:
            raise ConfigError(f"peer {name!r}: environment variable {body.dsn_env} is not set")
        return value
    return credential(f"peer {name!r}", str(body.dsn_credential))


def _side(link: str, label: str, body: SideFile, peers: dict[str, Peer]) -> Side:
    if body.peer not in peers:
        raise ConfigError(f"link {link!r}: side {label} names unknown peer {body.peer!r}"
                          + _did_you_mean(body.peer, peers))
    default_schema = "dbo" if peers[body.peer].dialect == "sqlserver" else "public"
    schema, _, table = body.table.rpartition(".")
    return Side(body.peer, schema or default_schema, table)


def _did_you_mean(word: str, choices: Any) -> str:
    hint = difflib.get_close_matches(word, sorted(choices), 1, 0.6)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _link(body: LinkFile, bridge: BridgeSettings, peers: dict[str, Peer]) -> Link:
    """A link with every unset overridable setting taken from [bridge]."""
    own = {k: getattr(body, k) for k in LINK_OVERRIDABLE}
    eff = {k: v if v is not None else getattr(bridge, k) for k, v in own.items()}
    name = body.name
    a, b = _side(name, "a", body.a, peers), _side(name, "b", body.b, peers)
    if eff["conflict"] == "newest_wins" and not eff["newest_column"]:
        raise ConfigError(f"link {name!r}: conflict newest_wins needs newest_column")
    if (body.direction == "both" and eff["merge_fallback"] == "newest_wins"
            and eff["conflict"] == "merge" and not eff["newest_column"]):
        raise ConfigError(f"link {name!r}: merge_fallback newest_wins needs newest_column")
    return Link(
        name=name, a=a, b=b, key=tuple(body.key),
        columns=dict(body.columns) if body.columns is not None else None,
        exclude=tuple(body.exclude), direction=body.direction, conflict=eff["conflict"],
        newest_column=eff["newest_column"], notify=eff["notify"], batch_size=eff["batch_size"],
        merge_fallback=eff["merge_fallback"], check_every=body.check_every, repair=body.repair,
    )

