"""The systemd notify protocol, over a real datagram socket, from a real bridge."""

from __future__ import annotations

import contextlib
import socket
from configparser import ConfigParser
from importlib import resources

from rigs import link, make_rig
from syncbridge.bridge.rig import wait_until


def test_bridge_sends_ready_and_watchdog(new_db, tmp_path):
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
        wait_until(lambda: received("WATCHDOG=1"), 10, "WATCHDOG=1")
    finally:
        sock.close()
        rig.close()


def test_units_are_notify_with_watchdog_and_hardening():
    unit = ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    text = (resources.files("syncbridge.bridge") / "systemd" / "syncbridge.service").read_text()
    unit.read_string(text)
    svc = unit["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0
    assert svc["Restart"] == "on-failure" and "LoadCredential" in svc
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
