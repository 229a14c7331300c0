"""Typed configuration: peers, links and bridge settings from one TOML file.

Every default lives in `DEFAULTS` below so that the CLI, the docs and the
bridge agree on them. Secrets (DSNs) may come from the environment or from a
systemd credential file so that the config file itself can be world-readable.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DIALECTS = ("postgres", "sqlserver")
DIRECTIONS = ("a_to_b", "b_to_a", "both")
CONFLICT_POLICIES = ("a_wins", "b_wins", "newest_wins", "manual")

DEFAULTS: dict[str, Any] = {
    "batch_size": 1000,  # signals claimed per batch
    "notify": True,  # pg_notify wake-up per captured statement
    "poll_interval": 0.05,  # seconds; adaptive poll floor when notify is off
    "max_poll_interval": 1.0,  # seconds; adaptive poll ceiling when notify is off
    "fallback_poll": 5.0,  # seconds; safety poll when notify is on
    "ct_poll_interval": 0.25,  # seconds; SQL Server current-version check
    "max_attempts": 8,  # deferrals of one key (e.g. FK not yet there) before dead letter
    "stats_interval": 1.0,  # seconds between queue-depth samples written to the hub
    "conflict": "a_wins",
    # issue 13: status truth, healing, metrics, retention
    "heartbeat_interval": 2.0,  # seconds; a bridge is shown gone after two missed beats
    "stall_after": 30.0,  # seconds of queued work (or a canary) not arriving -> `stalled`
    "stale_after": 10.0,  # seconds; an older depth sample of a non-hub queue is `stale`
    "canary_interval": 5.0,  # seconds between end-to-end canaries per direction; 0 = off
    "loop_stuck_after": 30.0,  # seconds without a loop tick before /healthz says 503
    "metrics": "",  # "host:port" serves /metrics and /healthz; "" = off
    "applied_batches_days": 7.0,  # days of sync.applied_batches kept on Postgres sinks
    "check_runs_days": 30.0,  # days of sync.check_runs (the last run per name is kept)
    "resolved_conflicts_days": 30.0,  # days resolved sync.conflicts are kept
    "prune_interval": 3600.0,  # seconds between pruning rounds
}


class ConfigError(ValueError):
    """A configuration problem; the message names the link, peer and column."""


@dataclass(frozen=True)
class Peer:
    name: str
    dialect: str
    dsn: str = field(repr=False)  # may hold a password: never logged


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

    @property
    def hub_peer(self) -> Peer:
        return self.peers[self.hub]

    def setting(self, name: str) -> Any:
        return self.settings.get(name, DEFAULTS[name])


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    cfg = parse(raw)
    return Config(cfg.peers, cfg.links, cfg.hub, cfg.settings, raw, p)


def parse(raw: dict[str, Any]) -> Config:
    peers = {name: _peer(name, body) for name, body in raw.get("peers", {}).items()}
    if not peers:
        raise ConfigError("config names no [peers]")
    links: dict[str, Link] = {}
    for body in raw.get("links", []):
        link = _link(body, peers)
        if link.name in links:
            raise ConfigError(f"link {link.name!r} is defined twice")
        links[link.name] = link
    hub = raw.get("hub") or next((n for n, p in peers.items() if p.dialect == "postgres"), None)
    if hub is None or hub not in peers or peers[hub].dialect != "postgres":
        raise ConfigError(f"hub {hub!r} must name a postgres peer (it holds sync.status)")
    settings = dict(raw.get("bridge", {}))
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"[bridge] has unknown settings: {', '.join(sorted(unknown))}")
    return Config(peers, links, hub, settings, raw)


def _peer(name: str, body: dict[str, Any]) -> Peer:
    if not _NAME.match(name):
        raise ConfigError(f"peer name {name!r} must be a plain identifier")
    dialect = body.get("dialect", "postgres")
    if dialect not in DIALECTS:
        raise ConfigError(f"peer {name!r}: dialect {dialect!r} is not one of {DIALECTS}")
    return Peer(name, dialect, _dsn(name, body))


def _dsn(name: str, body: dict[str, Any]) -> str:
    """DSN from the file, an environment variable, or a systemd credential."""
    if "dsn" in body:
        return str(body["dsn"])
    if "dsn_env" in body:
        value = os.environ.get(body["dsn_env"])
        if not value:
            raise ConfigError(f"peer {name!r}: environment variable {body['dsn_env']} is not set")
        return value
    if "dsn_credential" in body:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                f"peer {name!r}: dsn_credential needs systemd LoadCredential "
                "(CREDENTIALS_DIRECTORY is not set)"
            )
        return (Path(directory) / body["dsn_credential"]).read_text().strip()
    raise ConfigError(f"peer {name!r} has no dsn, dsn_env or dsn_credential")


def _side(link: str, label: str, body: Any, peers: dict[str, Peer]) -> Side:
    if not isinstance(body, dict) or "peer" not in body or "table" not in body:
        raise ConfigError(f"link {link!r}: side {label} needs peer and table")
    if body["peer"] not in peers:
        raise ConfigError(f"link {link!r}: side {label} names unknown peer {body['peer']!r}")
    default_schema = "dbo" if peers[body["peer"]].dialect == "sqlserver" else "public"
    schema, _, table = str(body["table"]).rpartition(".")
    return Side(body["peer"], schema or default_schema, table)


def _link(body: dict[str, Any], peers: dict[str, Peer]) -> Link:
    name = body.get("name")
    if not name or not _NAME.match(str(name)):
        raise ConfigError(f"link {name!r}: every link needs a name that is a plain identifier")
    direction = body.get("direction", "a_to_b")
    if direction not in DIRECTIONS:
        raise ConfigError(f"link {name!r}: direction {direction!r} is not one of {DIRECTIONS}")
    conflict = body.get("conflict", DEFAULTS["conflict"])
    if conflict not in CONFLICT_POLICIES:
        raise ConfigError(f"link {name!r}: conflict {conflict!r} is not one of {CONFLICT_POLICIES}")
    if conflict == "newest_wins" and not body.get("newest_column"):
        raise ConfigError(f"link {name!r}: conflict newest_wins needs newest_column")
    key = body.get("key")
    if not key or not isinstance(key, list):
        raise ConfigError(f"link {name!r}: key must be a list of side-a column names")
    _check_mixed_conflicts(name, body, peers, direction, conflict)
    return Link(
        name=name,
        a=_side(name, "a", body.get("a"), peers),
        b=_side(name, "b", body.get("b"), peers),
        key=tuple(key),
        columns=dict(body["columns"]) if "columns" in body else None,
        exclude=tuple(body.get("exclude", ())),
        direction=direction,
        conflict=conflict,
        newest_column=body.get("newest_column"),
        notify=bool(body.get("notify", DEFAULTS["notify"])),
        batch_size=int(body.get("batch_size", DEFAULTS["batch_size"])),
    )


def _check_mixed_conflicts(name: str, body: dict[str, Any], peers: dict[str, Peer],
                           direction: str, conflict: str) -> None:
    """Two-way links with a SQL Server side are not conflict-checked (engine/mssql_drain.py):
    a manual policy would promise parked conflicts that never come, so it is refused."""
    if direction != "both" or conflict != "manual":
        return
    sides = [body.get(s) for s in ("a", "b")]
    dialects = {peers[s["peer"]].dialect for s in sides
                if isinstance(s, dict) and s.get("peer") in peers}
    if "sqlserver" in dialects:
        raise ConfigError(
            f"link {name!r}: conflict = \"manual\" is not supported on two-way links with a "
            "SQL Server side (they are not conflict-checked; see docs/sqlserver.md)")
