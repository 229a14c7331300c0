"""SIGHUP (`systemctl reload syncbridge`): re-read the config file and plan the change.

The one SIGHUP path: bridge.daemon.Bridge turns the signal into `prepare()`,
run in a thread while the bridge keeps draining with the config it has. The
new file is validated as at start (the schema, then the catalogs of every
added or changed link, then the webhook mappings); any problem is refused with
its reason (`event=reload_refused`) and the running config is kept. A valid
file becomes a `Plan`, which the daemon applies between two terms of
leadership (the drain loops finish their batch, the hub session and its lock
stay; see docs/topologies.md "Reloading"), logging `event=reloaded`.

Also here: what the bridge says at start about webhook sources it does not drain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg

from syncbridge.engine import errors, validate
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError, load

log = logging.getLogger("syncbridge.reload")

_QUEUED_SOURCES = "select source, count(*) from sync.queue where op = 'W' group by source"


def check_webhooks_at_start(config: Config) -> None:
    """Webhook mappings against the catalog (ConfigError stops the start), then a WARNING
    for each source that has events queued on the hub but is not in this config."""
    validate.webhook_tables(config)
    configured = set(config.webhooks.sources)
    try:
        with psycopg.connect(config.hub_peer.dsn, autocommit=True) as conn:
            queued = dict(conn.execute(_QUEUED_SOURCES).fetchall())
    except psycopg.errors.UndefinedTable:  # not migrated yet: the bridge says so itself
        return
    for source, n in sorted(queued.items()):
        if source not in configured:
            log.warning("event=webhook_source_not_drained source=%s queued=%d reason=%s",
                        source, n, "not in [webhooks] of this config")
    if configured:
        log.info("event=webhook_sources draining=%s", ",".join(sorted(configured)))


@dataclass
class Plan:
    """A validated new config and what it changes against the running one."""

    config: Config
    shapes: dict[str, LinkShape]  # the links added or changed, validated
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    settings: bool = False  # [bridge] or [webhooks] changed
    basis: Config | None = None  # the running config it was compared with

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.settings)


def changed_links(old: Config, new: Config) -> list[str]:
    """Links in both configs whose definition, or a peer they use, differs."""
    peers_old, peers_new = old.raw.get("peers", {}), new.raw.get("peers", {})
    out = []
    for name in new.links.keys() & old.links.keys():
        link = new.links[name]
        moved = any(peers_old.get(p) != peers_new.get(p) for p in (link.a.peer, link.b.peer))
        if link != old.links[name] or moved:
            out.append(name)
    return sorted(out)


def prepare(running: Config) -> Plan:
    """The new config file as a Plan against `running`; ConfigError with the reason
    when it cannot be applied. Unchanged links are not validated again: the daemon
    keeps their shapes (an `adopt` may have moved them on since the start)."""
    assert running.path is not None
    new = load(running.path)
    if new.hub != running.hub or new.hub_peer.dsn != running.hub_peer.dsn:
        raise ConfigError(f"the hub changed ({running.hub!r} -> {new.hub!r} or its dsn); "
                          "the hub holds the leadership lock: restart the bridge to move it")
    plan = Plan(new, {}, sorted(new.links.keys() - running.links.keys()),
                sorted(running.links.keys() - new.links.keys()), changed_links(running, new),
                new.settings != running.settings or new.raw.get("webhooks")
                != running.raw.get("webhooks"), running)
    fresh = [*plan.added, *plan.changed]
    try:
        plan.shapes = validate.shapes(new, fresh) if fresh else {}
        if new.raw.get("webhooks") != running.raw.get("webhooks"):
            validate.webhook_tables(new)
    except psycopg.Error as e:
        raise ConfigError(f"validating the new config: {errors.describe(e)}") from None
    return plan


def log_refused(running: Config, reason: BaseException) -> None:
    log.error("event=reload_refused config=%s error=%s action=kept_running_config",
              running.path, " ".join(str(reason).split()))


def log_reloaded(plan: Plan) -> None:
    """event=reloaded with the links added, removed and changed; a WARNING for each webhook
    source added (the receiver, a separate process, accepts it only after a restart)."""
    basis = plan.basis.webhooks.sources if plan.basis is not None else {}
    for source in sorted(set(plan.config.webhooks.sources) - set(basis)):
        log.warning("event=webhook_source_added source=%s reason=%s", source,
                    "the bridge drains it from now on; restart the webhook receiver "
                    "(systemctl restart syncbridge-webhooks) so it accepts its events")

    def names(xs: list[str]) -> str:
        return ",".join(xs) or "-"

    log.info("event=reloaded config=%s links=%d added=%s removed=%s changed=%s settings=%s",
             plan.config.path, len(plan.config.links), names(plan.added), names(plan.removed),
             names(plan.changed), "changed" if plan.settings else "same")
