"""Typed configuration: peers, links, rules, webhooks and bridge settings from one TOML file.

The file is validated by the strict schema in engine/config_file.py, then
resolved here into the small frozen dataclasses the rest of the code uses
(`Config`, `Peer`, `Link`, `Side`). Secrets (DSNs) may come from the
environment or from a systemd credential file so that the config file itself
can be world-readable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from syncbridge.engine.config_file import (  # noqa: F401 - ConfigError, seconds: used everywhere
    _NAME,
    LINK_OVERRIDABLE,
    BridgeSettings,
    ConfigError,
    ConfigFile,
    LinkFile,
    PeerFile,
    RuleFile,
    SideFile,
    WebhooksFile,
    did_you_mean,
    explain,
    seconds,
)


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
    # side -> SQL condition its rows are read through (source sides only; docs/filters.md)
    where: dict[str, str] = field(default_factory=dict)
    # source column -> SQL expression read in its place (one-way links only)
    transform: dict[str, str] = field(default_factory=dict)
    active_hours: str | None = None  # "22:00-06:00" in the hub server's TimeZone; None = always
    deletes: str = "propagate"  # "ignore": a row deleted at the source stays at the sink
    truncate: str = "propagate"  # "ignore": not propagated; "refuse": the source's TRUNCATE fails

    def side(self, name: str) -> Side:
        return self.a if name == "a" else self.b

    def directions(self) -> list[tuple[str, str]]:
        """(source side, sink side) pairs this link moves data along."""
        return _directions(self.direction)


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
        raise ConfigError(explain(e, raw)) from None
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
                          + did_you_mean(body.peer, peers))
    default_schema = "dbo" if peers[body.peer].dialect == "sqlserver" else "public"
    schema, _, table = body.table.rpartition(".")
    return Side(body.peer, schema or default_schema, table)


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
    where = _where(body)
    _check_filters(name, peers, a, b, body, where)
    _check_propagation(name, peers, a, b, body)
    return Link(
        name=name, a=a, b=b, key=tuple(body.key),
        columns=dict(body.columns) if body.columns is not None else None,
        exclude=tuple(body.exclude), direction=body.direction, conflict=eff["conflict"],
        newest_column=eff["newest_column"], notify=eff["notify"], batch_size=eff["batch_size"],
        merge_fallback=eff["merge_fallback"], check_every=body.check_every, repair=body.repair,
        where=where, transform=dict(body.transform),
        active_hours=body.active_hours, deletes=body.deletes, truncate=body.truncate,
    )


def _check_propagation(name: str, peers: dict[str, Peer], a: Side, b: Side,
                       body: LinkFile) -> None:
    """deletes / truncate other than "propagate": refused where they would be unsound.

    On a two-way link a row kept on one side and gone on the other is brought back
    (or made a conflict) by its next edit, so ignoring deletes or truncates there
    breaks the link's promise that both sides converge. The SQL Server drains
    (and change tracking) do not implement the options, so they are refused there."""
    ignores = [f"{k} = \"ignore\"" for k in ("deletes", "truncate")
               if getattr(body, k) == "ignore"]
    if body.direction == "both" and ignores:
        raise ConfigError(
            f"link {name!r}: {' and '.join(ignores)} is refused on a two-way link: a row "
            "deleted on one side and kept on the other would come back with its next edit "
            "(or conflict); use a one-way link for an archive")
    dialects = {peers[a.peer].dialect, peers[b.peer].dialect}
    if "sqlserver" in dialects and (body.deletes != "propagate" or body.truncate != "propagate"):
        raise ConfigError(
            f"link {name!r}: deletes and truncate other than \"propagate\" are supported "
            "only between Postgres peers")


def _where(body: LinkFile) -> dict[str, str]:
    """`where` as side -> condition. A string is the source side's filter of a one-way
    link; a two-way link names both sides (their columns may be named differently, and
    a condition given for one side only would move rows out on one way and not back)."""
    name, sources = body.name, [d[0] for d in _directions(body.direction)]
    if body.where is None:
        return {}
    if isinstance(body.where, str):
        if len(sources) == 2:
            raise ConfigError(
                f"link {name!r}: direction = \"both\" needs where = {{ a = \"...\", b = "
                "\"...\" }: the condition over each side's own columns")
        out = {sources[0]: body.where}
    else:
        out = {s: c for s, c in (("a", body.where.a), ("b", body.where.b)) if c is not None}
        for side in out:
            if side not in sources:
                raise ConfigError(
                    f"link {name!r}: where.{side}: side {side} is the sink of this "
                    f"{body.direction} link; a filter applies to the side rows are read from "
                    f"(where.{sources[0]})")
        missing = [s for s in sources if s not in out]
        if missing:
            raise ConfigError(f"link {name!r}: where.{missing[0]} is missing: a filtered "
                              "two-way link needs the condition for both sides")
    for side, cond in out.items():
        if not cond.strip():
            raise ConfigError(f"link {name!r}: where for side {side} is empty")
    return out


def _check_filters(name: str, peers: dict[str, Peer], a: Side, b: Side, body: LinkFile,
                   where: dict[str, str]) -> None:
    """Refuse what filters and transforms cannot do soundly (docs/filters.md)."""
    if not where and not body.transform:
        return
    what = "where" if where else "transform"
    if "sqlserver" in {peers[a.peer].dialect, peers[b.peer].dialect}:
        raise ConfigError(f"link {name!r}: {what} is supported on Postgres-to-Postgres links "
                          "only (the SQL Server paths read rows without it)")
    if body.transform and body.direction == "both":
        raise ConfigError(
            f"link {name!r}: transform is not supported on two-way links: the base image of a "
            "row would be the transformed one, which the untransformed source row never "
            "equals, so every change coming back would be judged a conflict")
    for column, expr in body.transform.items():
        if not expr.strip():
            raise ConfigError(f"link {name!r}: transform of column {column!r} is empty")


def _directions(direction: str) -> list[tuple[str, str]]:
    """(source, sink) pairs of a direction: the one rule Link.directions() also uses."""
    return [p for p, on in ((("a", "b"), direction in ("a_to_b", "both")),
                            (("b", "a"), direction in ("b_to_a", "both"))) if on]
