"""What the running bridge says about webhook sources it does not drain, at start and on SIGHUP.

A full reload of links on SIGHUP is a later change; until then the bridge
re-reads and validates the config file on SIGHUP (`systemctl reload
syncbridge`), keeps running with the config it started with, and logs, as a
WARNING, each webhook source it does not drain and what to do about it.
"""

from __future__ import annotations

import logging

import psycopg

from syncbridge.engine import validate
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


def on_sighup(running: Config) -> None:
    """Re-read the config file; keep the running config; say what only a restart applies."""
    assert running.path is not None
    try:
        new = load(running.path)
    except ConfigError as e:
        log.error("event=reload_refused config=%s error=%s", running.path, e)
        return
    added = sorted(set(new.webhooks.sources) - set(running.webhooks.sources))
    for source in added:
        log.warning("event=webhook_source_not_drained source=%s reason=%s", source,
                    "added after the bridge started; restart it to drain this source "
                    "(systemctl restart syncbridge)")
    changed = new.raw != running.raw
    log.info("event=reload config=%s changed=%s applied=none%s", running.path,
             str(changed).lower(), " restart_needed=true" if changed else "")
