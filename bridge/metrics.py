"""Prometheus /metrics and /healthz for `syncbridge run` ([bridge] metrics = "host:port").

The figures are sync.status as the stats task last read it (every
stats_interval), so dashboards and `select * from sync.status` agree; only
the bridge's own role and loop liveness come from the process. Served by a
small asyncio HTTP/1.0 responder: two GET paths need no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger("syncbridge.metrics")

STATES = ("flowing", "idle", "waiting for sink", "waiting for source", "failing", "paused",
          "stalled", "no bridge")
ROLES = ("active", "standby", "starting")
LABELS = ["link", "direction"]


def state_name(state: str) -> str:
    """The state without its detail: 'failing: [08006] ...' -> 'failing'."""
    return state.split(":", 1)[0]


def _seconds(v: Any) -> float:
    return v.total_seconds() if v is not None else 0.0


class Metrics(Collector):
    """Collects from the last sync.status snapshot (one row per link and direction)."""

    def __init__(self, role: Callable[[], str]) -> None:
        self.rows: list[Any] = []
        self.role = role  # the bridge's role now (standby bridges read no status)
        self.read_at: float | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def update(self, rows: list[Any]) -> None:
        self.rows, self.read_at = list(rows), time.time()

    def collect(self) -> Iterator[Any]:
        gauges = {
            "queued": ("Signals queued (sync.status.queued)", lambda r: r["queued"]),
            "lag_seconds": ("Age of the oldest queued signal (sync.status.lag)",
                            lambda r: _seconds(r["lag"])),
            "canary_lag_seconds": ("End-to-end time of the last canary",
                                   lambda r: _seconds(r["canary_lag"])),
            "dead_letters": ("Open dead letters", lambda r: r["dead_letters"]),
            "conflicts_open": ("Conflicts not resolved", lambda r: r["open_conflicts"]),
            "queue_sample_stale": ("1 when queued/lag come from a stale sample",
                                   lambda r: 1 if r["stale"] else 0),
        }
        counters = {
            "applied_rows": ("Rows applied (sync.status.applied_total)",
                             lambda r: r["applied_total"]),
            "applied_batches": ("Batches applied", lambda r: r["batches_total"]),
            "retries": ("Failed attempts and deferred rows (sync.status.retries)",
                        lambda r: r["retries"]),
            "conflicts": ("Conflicts detected", lambda r: r["conflicts_total"]),
        }
        for name, (doc, get) in gauges.items():
            g = GaugeMetricFamily(f"syncbridge_{name}", doc, labels=LABELS)
            for r in self.rows:
                g.add_metric([r["link"], r["direction"]], float(get(r)))
            yield g
        for name, (doc, get) in counters.items():
            c = CounterMetricFamily(f"syncbridge_{name}", doc, labels=LABELS)
            for r in self.rows:
                c.add_metric([r["link"], r["direction"]], float(get(r)))
            yield c
        st = GaugeMetricFamily("syncbridge_state", "1 for the state of each link direction "
                               "(sync.status.state without its detail)",
                               labels=[*LABELS, "state"])
        for r in self.rows:
            for s in STATES:
                st.add_metric([r["link"], r["direction"], s],
                              1.0 if state_name(r["state"]) == s else 0.0)
        yield st
        role = GaugeMetricFamily("syncbridge_bridge_role", "1 for this bridge's role",
                                 labels=["role"])
        now = self.role()
        for r in ROLES:
            role.add_metric([r], 1.0 if now == r else 0.0)
        yield role
        age = GaugeMetricFamily("syncbridge_status_age_seconds",
                                "Seconds since sync.status was last read (-1: never)")
        age.add_metric([], time.time() - self.read_at if self.read_at else -1.0)
        yield age

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve(address: str, metrics: Metrics,
                health: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
    """Serve GET /metrics and GET /healthz on host:port until cancelled."""
    host, _, port = address.rpartition(":")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)).strip():
                pass  # headers: nothing we need
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else ""
            if path == "/metrics":
                code, ctype, body = 200, CONTENT_TYPE_LATEST, metrics.render()
            elif path == "/healthz":
                ok, detail = health()
                code, ctype = (200 if ok else 503), "application/json"
                body = json.dumps({"ok": ok, **detail}).encode()
            else:
                code, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            writer.write(f"HTTP/1.0 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that hung up or never spoke: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host or "127.0.0.1", int(port))
    log.info("event=metrics_listening address=%s", address)
    async with server:
        await server.serve_forever()
