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
            .replace("@@CREDENTIALS@@", "\n".join(lines) or "# (the config names no credentials)"))


def wanted(config: Config) -> list[str]:
    """The bridge unit always; the webhook receiver when the config has webhook sources."""
    return [UNITS[0], *([UNITS[1]] if config.webhooks.sources else [])]
