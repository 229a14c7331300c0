"""The demo is part of the product: it must run and converge honestly."""

from __future__ import annotations

import subprocess
import sys


def test_demo_exits_zero_and_converges():
    out = subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "demo"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo passed" in out.stdout
    assert "DIFFERENT" not in out.stdout
    assert "select * from sync.status;" in out.stdout
