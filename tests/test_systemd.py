"""systemd: the notify protocol from a real bridge, and the units `syncbridge systemd` writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.bridge.units import BRIDGE_ENVIRONMENT

SAMPLE = """
hub = "portal"

[peers.portal]
dsn_credential = "portal-dsn"

[peers.clinic]
dsn_credential = "clinic-dsn"

[peers.lms]
dsn_env = "LMS_DSN"

[[links]]
name = "patients"
a = { peer = "portal", table = "public.patients" }
b = { peer = "clinic", table = "public.patients" }
key = ["id"]

[webhooks.sources.shop]
provider = "shopify"
secret_credential = "shop-secret"
[[webhooks.sources.shop.topics]]
topic = "customers/update"
table = "public.customers"
key = "id"
columns = { id = "id" }
"""
UNITS = ("syncbridge.service", "syncbridge-webhooks.service")


def test_bridge_sends_ready_watchdog_and_stopping(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, "create table t (id int primary key);",
                   [link("t", "t", ["id"])])
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    got: list[str] = []

    def received(word: str) -> bool:
        with contextlib.suppress(TimeoutError):
            got.append(sock.recv(4096).decode())
        return any(word in m for m in got)

    try:
        # WATCHDOG_USEC=1s -> a ping every 0.5 s while the drain loops tick
        rig.start_bridge({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        wait_until(lambda: received("READY=1"), 30, "READY=1")
        assert any("STATUS=active" in m for m in got)
        wait_until(lambda: received("WATCHDOG=1"), 30, "WATCHDOG=1")
        assert rig.stop_bridge() == 0
        wait_until(lambda: received("STOPPING=1"), 10, "STOPPING=1")
    finally:
        sock.close()
        rig.close()


def test_rig_bridges_run_in_the_units_environment(new_db, tmp_path, monkeypatch):
    """The benches and tests measure the bridge as the unit runs it (bridge/units.py)."""
    for name in BRIDGE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    rig = make_rig(new_db, tmp_path, "create table t (id int primary key);",
                   [link("t", "t", ["id"])])
    try:
        proc = rig.start_bridge()
        # Popen returns when exec closes the child's close-on-exec pipe, which the kernel
        # does before it lays out the new image's environment: until then environ reads
        # empty (seen on a loaded CI machine), so wait for the exec to finish
        path = Path(f"/proc/{proc.pid}/environ")
        wait_until(lambda: path.read_bytes() != b"", 30, "the bridge's exec to finish")
        environ = path.read_bytes().split(b"\0")
        for name, value in BRIDGE_ENVIRONMENT.items():
            assert f"{name}={value}".encode() in environ
    finally:
        rig.stop_bridge()
        rig.close()


def _render(tmp_path: Path, *extra: str) -> dict[str, str]:
    config = tmp_path / "syncbridge.toml"
    config.write_text(SAMPLE)
    out = tmp_path / "units"
    out.mkdir()
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    (tmp_path / "creds").mkdir()
    for name in ("portal-dsn", "clinic-dsn"):
        (tmp_path / "creds" / name).write_text("postgresql://bridge@127.0.0.1:1/x")
    env.pop("LMS_DSN", None)
    env["LMS_DSN"] = "postgresql://bridge@127.0.0.1:1/lms"
    done = subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "systemd",
                           "--config", str(config), "--output-dir", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return {name: (out / name).read_text() for name in UNITS}


def _service(text: str) -> ConfigParser:
    unit = ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    return unit


def _values(text: str, key: str = "LoadCredential") -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines()
            if line.startswith(f"{key}=")]


def test_rendered_units_name_this_executable_and_exactly_the_configs_credentials(tmp_path):
    units = _render(tmp_path)
    exe = str(Path(sys.executable).parent / "syncbridge")
    for name, text in units.items():
        svc = _service(text)["Service"]
        assert svc["ExecStart"].split()[0] == exe, name
        assert f"--config {tmp_path / 'syncbridge.toml'}" in svc["ExecStart"]
        assert svc["User"] == "syncbridge" and svc["NoNewPrivileges"] == "yes"
        assert svc["ProtectSystem"] == "strict" and svc["Restart"] == "on-failure"
        assert "@@" not in text
    bridge = _service(units["syncbridge.service"])["Service"]
    assert bridge["Type"] == "notify" and int(bridge["WatchdogSec"]) > 0
    assert bridge["ExecStart"].endswith(" run") and "kill -HUP" in bridge["ExecReload"]
    assert _values(units["syncbridge.service"]) == [
        "portal-dsn:/etc/syncbridge/credentials/portal-dsn",
        "clinic-dsn:/etc/syncbridge/credentials/clinic-dsn"]
    # the allocator setting that keeps the bridge's RSS flat (units.BRIDGE_ENVIRONMENT)
    assert _values(units["syncbridge.service"], "Environment") == [
        "SYNCBRIDGE_LOG_LEVEL=info", "MALLOC_MMAP_THRESHOLD_=131072"]
    hooks = _service(units["syncbridge-webhooks.service"])["Service"]
    assert " webhooks " in hooks["ExecStart"]
    # the receiver talks only to the hub: its DSN and the sources' secrets, nothing else
    assert _values(units["syncbridge-webhooks.service"]) == [
        "portal-dsn:/etc/syncbridge/credentials/portal-dsn",
        "shop-secret:/etc/syncbridge/credentials/shop-secret"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_rendered_units_pass_systemd_analyze_verify(tmp_path):
    units = _render(tmp_path)
    for name in units:
        done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "units" / name)],
                              capture_output=True, text=True, timeout=60)
        problems = [line for line in (done.stdout + done.stderr).splitlines()
                    if name in line or "not executable" in line]
        assert done.returncode == 0 and not problems, done.stdout + done.stderr
