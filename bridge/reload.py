"""SIGHUP (`systemctl reload syncbridge`): re-read the config file and run it, no restart.

The one SIGHUP path. `Reloading` (a part of bridge.daemon.Bridge) runs
`prepare()` in a thread while the bridge keeps draining with the config it
has. The new file is validated as at start (the schema, then the catalogs of
every added or changed link, then the webhook mappings); any problem is
refused with its reason (`event=reload_refused`) and the running config is
kept. A valid file becomes a `Plan`: the running term ends as a stop does
(drain loops finish their batch), the plan is applied, and the next term runs
it on the same hub session, so the leadership lock is never let go.

The lock's name follows the set of links (engine/hub/lease.py lock_key): a
leading bridge takes the new set's lock before it applies the plan (refused
if another bridge holds it) and keeps every lock it took, so no bridge started
with the old or the new file leads beside it. A standby takes them all or
none. The links a bridge holds (bridge/sharing.py) are kept through a reload;
those the new file removes are let go once the term's drains stopped.
docs/topologies.md "Reloading" has the operator's side.

Also here: what the bridge says at start about webhook sources it does not drain.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import psycopg

from syncbridge.engine import errors, validate
from syncbridge.engine.catalog import LinkShape
from syncbridge.engine.config import Config, ConfigError, load
from syncbridge.engine.hub.lease import Lease, lock_key

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
    settings: bool = False  # anything but [peers] and [[links]]: [bridge], [webhooks], rules
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


def _beyond_links(config: Config) -> dict:
    """The file's tables that are not peers or links ([bridge], [webhooks], [[rules]])."""
    return {k: v for k, v in config.raw.items() if k not in ("peers", "links")}


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
                _beyond_links(new) != _beyond_links(running), running)
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


class Reloading:
    """The reload half of bridge.daemon.Bridge: the SIGHUP loop, the plan applied between
    terms, and the leadership locks of every link set the bridge has run."""

    config: Config
    shapes: dict[str, LinkShape]
    hup: asyncio.Event  # set by SIGHUP
    halt: asyncio.Event  # the running term ends
    pending: Plan | None  # validated, applied by the leadership loop between terms
    lock_keys: list[str]  # the lock of every link set run, the start config's first
    held: set[str]  # the lock_keys the hub session holds
    hb: float

    async def _take_all(self, lease: Lease) -> bool:
        """Every lock of lock_keys, or none: a bridge leads only with the locks of every
        link set it ran, so no bridge of an older or newer config leads beside it."""
        for key in self.lock_keys:
            if key in self.held:
                continue
            if not await lease.try_take(key):
                for k in self.held:
                    await lease.release(k)
                self.held.clear()
                return False
            self.held.add(key)
        return True

    async def _reload_loop(self) -> None:
        """Each SIGHUP: the new config validated in a thread while draining goes on;
        refused (old config kept) or handed to the leadership loop (self.pending)."""
        while True:
            await self.hup.wait()
            self.hup.clear()
            basis = self.config
            try:
                plan = await asyncio.to_thread(prepare, basis)
            except ConfigError as e:
                log_refused(basis, e)
                continue
            if basis is not self.config:  # another reload was applied meanwhile: again
                self.hup.set()
                continue
            if plan.empty:
                log_reloaded(plan)
                continue
            self.pending = plan
            self.halt.set()  # a running term ends gracefully; between terms it is applied

    async def _apply_pending(self, lease: Lease | None) -> None:
        """Run the pending plan from now on. Holding the lead, the new link set's lock is
        taken first (on the same session) or the reload is refused; the old locks stay."""
        plan, self.pending = self.pending, None
        assert plan is not None
        if plan.basis is not self.config:  # compared with an older config: compare again
            self.hup.set()
            return
        key = lock_key(list(plan.config.links))
        if key not in self.lock_keys:
            if self.held and lease is not None and not await lease.try_take(key):
                log_refused(self.config, ConfigError(
                    "another bridge holds the leadership lock of the new set of links"))
                return
            if self.held:
                self.held.add(key)
            self.lock_keys.append(key)
        self.shapes = {n: plan.shapes[n] if n in plan.shapes else self.shapes[n]
                       for n in plan.config.links}
        self.config = plan.config
        self.hb = float(plan.config.setting("heartbeat_interval"))
        if lease is not None:
            lease.hb = self.hb
        log_reloaded(plan)
