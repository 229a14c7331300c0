"""The demo is part of the product: it must run and converge honestly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_exits_zero_and_converges():
    out = subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "demo"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo passed" in out.stdout
    assert "DIFFERENT" not in out.stdout
    assert "select * from sync.status;" in out.stdout
    assert "key change on the clinic (slot 2 -> 7): portal slots now [1, 7]" in out.stdout
    assert "TRUNCATE on the portal: clinic audit_notes now holds ids [1000]" in out.stdout
    assert "conflict (both sides edited one patient)" in out.stdout
    assert "'a_wins', 'a'" in out.stdout
    workdir = re.search(r"starting embedded PostgreSQL in (\S+) ", out.stdout).group(1)
    assert not Path(workdir).exists(), "the demo left its temporary directory behind"
