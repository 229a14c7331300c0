"""`[bridge] metrics`: /metrics agrees with sync.status, /healthz says when a loop is stuck."""

from __future__ import annotations

import socket

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from heal_support import arrives, status, until
from rigs import link, make_rig

SCHEMA = "create table items (id int primary key, v text not null);"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _health(url: str) -> int:
    try:
        return httpx.get(url + "/healthz", timeout=5).status_code
    except httpx.TransportError:
        return 0


def test_metrics_match_sync_status_and_healthz_flips_when_a_loop_is_stuck(new_db, tmp_path):
    port = _port()
    url = f"http://127.0.0.1:{port}"
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   {"metrics": f"127.0.0.1:{port}", "loop_stuck_after": 2.0,
                    "fallback_poll": 1.0, "canary_interval": 60.0})  # one canary, then quiet
    try:
        rig.start_bridge()
        until(lambda: _health(url) == 200, 60, "/healthz 200")  # the bridge's start
        rig.execute("a", "insert into items select g, 'x' from generate_series(1, 50) g")
        rig.wait_equal({"items": ["id"]})
        arrives(rig, 1000)
        lab = (("direction", "a_to_b"), ("link", "items"))

        def agrees() -> bool:
            m, s = _metrics(url), status(rig)
            return (m[("syncbridge_applied_rows_total", lab)] == s["applied_total"] == 51
                    and m[("syncbridge_applied_batches_total", lab)] == s["batches_total"]
                    and m[("syncbridge_queued", lab)] == s["queued"]
                    and m[("syncbridge_retries_total", lab)] == s["retries"]
                    and m[("syncbridge_dead_letters", lab)] == s["dead_letters"]
                    and m[("syncbridge_state", (*lab, ("state", s["state"])))] == 1.0
                    and m[("syncbridge_canary_lag_seconds", lab)] > 0)

        try:
            until(agrees, 30, "/metrics to agree with sync.status")
        except TimeoutError:
            print({k: v for k, v in _metrics(url).items() if ("link", "items") in k[1]},
                  status(rig))
            raise
        m = _metrics(url)
        assert m[("syncbridge_bridge_role", (("role", "active"),))] == 1.0
        assert sum(v for (name, labels), v in m.items() if name == "syncbridge_state") == 1.0
        # a stuck drain loop: the sink table is locked, the batch waits on it
        with psycopg.connect(rig.dsn["b"]) as blocker:
            blocker.execute("lock table items in access exclusive mode")
            rig.execute("a", "insert into items values (-1, 'stuck')")
            took = until(lambda: _health(url) == 503, 30, "/healthz 503")
            print(f"healthz: 503 {took:.2f}s after the loop got stuck (loop_stuck_after 2 s)")
            body = httpx.get(url + "/healthz", timeout=5).json()
            assert "items:a->b" in body["stuck"], body  # the direction whose batch hangs
            blocker.rollback()
        until(lambda: _health(url) == 200, 30, "/healthz 200 again")
        assert httpx.get(url + "/nope", timeout=5).status_code == 404
    finally:
        rig.close()


def test_a_standby_is_healthy_and_says_so(new_db, tmp_path):
    port = _port()
    url = f"http://127.0.0.1:{port}"
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")])
    try:
        rig.start_bridge()  # the active one, without metrics
        until(lambda: status(rig).get("state") == "idle", 60, "an active bridge")
        rig.config_path.write_text(rig.config_path.read_text().replace(
            "[bridge]\n", f'[bridge]\nmetrics = "127.0.0.1:{port}"\n'))
        rig.start_bridge()
        until(lambda: _health(url) == 200, 60, "/healthz 200 from the standby")
        assert httpx.get(url + "/healthz", timeout=5).json()["role"] == "standby"
        m = _metrics(url)
        assert m[("syncbridge_bridge_role", (("role", "standby"),))] == 1.0
        assert m[("syncbridge_bridge_role", (("role", "active"),))] == 0.0
    finally:
        rig.close()
