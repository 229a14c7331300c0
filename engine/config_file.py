"""The configuration file's schema: strict pydantic models of the TOML.

An unknown key anywhere is an error with a did-you-mean, a value of the wrong
type is an error naming where it is (`explain`), and every default is a field
default here (the README's configuration section lists the same values).
`[bridge]` settings that a link may also set (`LINK_OVERRIDABLE`) are the
defaults of every link that does not set its own.

Adding a setting is one line: a field with its default and a unit comment in
`BridgeSettings` (read with `config.setting("name")`), `PeerFile` (read with
`peer.settings["name"]`), `LinkFile` or `WebhooksFile`. engine/config.py
resolves the validated file into the dataclasses the rest of the code uses.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
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


_CLOCK = r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?"
_HOURS = re.compile(rf"^{_CLOCK}-(?:{_CLOCK}|(24):(00)(?::(00))?)$")


def _active_hours(value: str) -> str:
    """'22:00-06:00' (24-hour clock, seconds optional, end 24:00 allowed; a start
    after the end wraps past midnight), normalised without spaces."""
    text = value.replace(" ", "")
    m = _HOURS.match(text)
    if not m:
        raise ValueError(f"active_hours {value!r} is not a window like \"22:00-06:00\" "
                         "(HH:MM-HH:MM on a 24-hour clock, seconds optional)")
    start, end = (t if len(t) == 8 else t + ":00" for t in text.split("-"))
    if start == end:
        raise ValueError(f"active_hours {value!r} starts where it ends; leave active_hours "
                         "out for a link that always flows")
    return text


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
ActiveHours = Annotated[str, AfterValidator(_active_hours)]
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
    fallback_poll: Positive = 300.0  # seconds; safety claim when notify is on (LISTEN wakes)
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
    canary_interval: NonNegative = 5.0  # s between canaries of a busy direction; 0 = off
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


class WhereFile(_Strict):
    """`where = { a = "...", b = "..." }`: a row filter per source side, over its columns."""

    a: str | None = None
    b: str | None = None


# a string, or a table of sides: one error message for the form given, not one per form
Where = Annotated[
    Annotated[str, Tag("text")] | Annotated[WhereFile, Tag("sides")],
    Discriminator(lambda v: "text" if isinstance(v, str) else "sides" if isinstance(v, dict)
                  else None, custom_error_type="where",
                  custom_error_message='must be a SQL condition or { a = "...", b = "..." }')]
_TAGS = ("text", "sides")  # left out of the place an error names


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
    where: Where | None = None  # SQL condition over the source rows (docs/filters.md)
    transform: dict[str, str] = {}  # source column -> SQL expression read in its place
    active_hours: ActiveHours | None = None  # "22:00-06:00", hub server's TimeZone; None = always
    deletes: Literal["propagate", "ignore"] = "propagate"  # ignore: the sink keeps deleted rows
    truncate: Literal["propagate", "ignore", "refuse"] = "propagate"  # refuse: TRUNCATE fails


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


# -- errors ------------------------------------------------------------------------------


def explain(e: ValidationError, raw: dict[str, Any]) -> str:
    """The first problem as one line naming where it is; the count of the others."""
    errs = e.errors(include_url=False)
    first = _one(errs[0], raw)
    return first if len(errs) == 1 else f"{first} (and {len(errs) - 1} more problem(s))"


def _one(err: Any, raw: dict[str, Any]) -> str:
    loc = list(err["loc"])
    loc = [p for i, p in enumerate(loc) if not (i and loc[i - 1] == "where" and p in _TAGS)]
    where, field_path = _where(loc, raw)
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


def did_you_mean(word: str, choices: Any) -> str:
    hint = difflib.get_close_matches(word, sorted(choices), 1, 0.6)
    return f" (did you mean {hint[0]!r}?)" if hint else ""
