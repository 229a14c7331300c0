"""`syncbridge systemd`: the two units, rendered for this installation and config.

ExecStart names the `syncbridge` executable that is running now (the one in
the venv under /opt/syncbridge, not a guessed /usr/local/bin), and each unit
loads exactly the credentials the config names: the bridge every peer's
`dsn_credential`, the webhook receiver the hub's and the sources'
`secret_credential`.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from syncbridge.engine.config import Config

CREDENTIALS_DIR = "/etc/syncbridge/credentials"  # where the recipe keeps credential files
UNITS = ("syncbridge.service", "syncbridge-webhooks.service")
# The bridge's environment beyond its config: the unit sets it, and the local rig
# (bridge/bench/rig.py) starts its bridges with it, so tests and benches run what
# operators run. glibc raises its mmap threshold (and its trim threshold) each time a
# large block it mapped is freed, up to 32 MB: from then on such blocks (a batch's
# jsonb, a large result) are carved from the main heap, and the free holes they leave
# between long-lived objects stay resident. Under a steady load the bridge's RSS kept
# growing while the bytes in use stayed flat (`syncbridge bench --only soak`). Setting
# the threshold turns that adjustment off: blocks of 128 KiB and more get mappings of
# their own, returned when freed. (The bridge works on one thread; others run only DNS
# lookups and reloads, so glibc's per-thread arenas, MALLOC_ARENA_MAX, are not it.)
BRIDGE_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def executable() -> str:
    """The syncbridge script beside this interpreter (a venv's bin/), else the one on PATH."""
    beside = Path(sys.executable).parent / "syncbridge"
    if beside.exists():
        return str(beside.absolute())
    found = shutil.which("syncbridge")
    return str(Path(found).absolute()) if found else str(beside.absolute())


def credentials(config: Config, unit: str) -> list[str]:
    """Credential names the unit needs, in config order, each once."""
    peers = config.peers if unit == UNITS[0] else {config.hub: config.hub_peer}
    names = [p for name in peers if (p := _peer_credential(config, name))]
    if unit == UNITS[1]:
        names += [s.secret_credential for s in config.webhooks.sources.values()
                  if s.secret_credential]
    return list(dict.fromkeys(names))


def _peer_credential(config: Config, peer: str) -> str | None:
    body = config.raw.get("peers", {}).get(peer, {})
    return body.get("dsn_credential")


def render(config: Config, unit: str, config_path: str, exec_path: str | None = None,
           credentials_dir: str = CREDENTIALS_DIR) -> str:
    template = (resources.files("syncbridge.bridge") / "systemd" / unit).read_text()
    lines = [f"LoadCredential={n}:{credentials_dir.rstrip('/')}/{n}"
             for n in credentials(config, unit)]
    return (template.replace("@@EXEC@@", exec_path or executable())
            .replace("@@CONFIG@@", config_path)
            .replace("@@CREDENTIALS@@", "\n".join(lines) or "# (the config names no credentials)")
            .replace("@@ENVIRONMENT@@", "\n".join(
                f"Environment={k}={v}" for k, v in BRIDGE_ENVIRONMENT.items())))


def wanted(config: Config) -> list[str]:
    """The bridge unit always; the webhook receiver when the config has webhook sources."""
    return [UNITS[0], *([UNITS[1]] if config.webhooks.sources else [])]
