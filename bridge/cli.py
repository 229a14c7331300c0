"""The `syncbridge` command: migrate, install, run, status, demo, bench, ...

Every option that has an environment variable names it in its help, and the
config path comes from --config or SYNCBRIDGE_CONFIG.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from syncbridge.engine.config import Config, ConfigError, load

from . import logs

EXIT_ERROR = 2


def _config(args: argparse.Namespace) -> Config:
    return load(args.config)


def cmd_migrate(args: argparse.Namespace) -> int:
    from syncbridge.engine.migrate import migrate

    for peer, n in migrate(_config(args), rollback=args.rollback):
        print(f"{peer}: {n} migration(s) {'rolled back' if args.rollback else 'applied'}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from syncbridge.engine import install

    for line in install.install(_config(args), args.link or None,
                                fix_sequences=getattr(args, "fix_sequences", False)):
        print(line)
    return 0


def cmd_adopt(args: argparse.Namespace) -> int:
    from syncbridge.engine import adopt

    for line in adopt.adopt(_config(args), args.link):
        print(line)
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from syncbridge.engine import install

    for line in install.uninstall(_config(args), args.link or None):
        print(line)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.run(_config(args))


def cmd_status(args: argparse.Namespace) -> int:
    from syncbridge.engine import status

    print(status.render(_config(args).hub_peer.dsn))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.main(keep=args.keep)


def cmd_webhooks(args: argparse.Namespace) -> int:
    from .webhook_app import serve

    serve(_config(args), args.host, args.port)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syncbridge", description=__doc__)
    p.add_argument("--config", default=os.environ.get("SYNCBRIDGE_CONFIG", "syncbridge.toml"),
                   help="config file (env SYNCBRIDGE_CONFIG; default ./syncbridge.toml)")
    p.add_argument("--log-level", default=os.environ.get("SYNCBRIDGE_LOG_LEVEL", "info"),
                   help="debug, info, warning, error (env SYNCBRIDGE_LOG_LEVEL)")
    p.add_argument("--log-format", choices=("text", "json"),
                   default=os.environ.get("SYNCBRIDGE_LOG_FORMAT", "text"),
                   help="one event per line as key=value or JSON (env SYNCBRIDGE_LOG_FORMAT)")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int],
            help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    add("migrate", cmd_migrate, "create or upgrade the sync schema on every peer").add_argument(
        "--rollback", action="store_true", help="roll the sync schema back instead")
    for name, fn, text in (("install", cmd_install, "install capture for links"),
                           ("uninstall", cmd_uninstall, "remove capture for links")):
        add(name, fn, text).add_argument("link", nargs="*", help="links (default: all)")
    sub.choices["install"].add_argument(
        "--fix-sequences", action="store_true",
        help="two-way links: make key sequences disjoint (side a odd, side b even)")
    add("adopt", cmd_adopt, "accept a schema change: re-validate a paused link, record base "
        "images for the new columns, resume it").add_argument("link", nargs="+")
    add("run", cmd_run, "run the bridge in the foreground (logs to stderr)")
    add("status", cmd_status, "print sync.status from the hub")
    hooks = add("webhooks", cmd_webhooks, "serve POST /webhooks/{source} (uvicorn)")
    hooks.add_argument("--host", default=os.environ.get("SYNCBRIDGE_WEBHOOK_HOST", "127.0.0.1"),
                       help="listen address (env SYNCBRIDGE_WEBHOOK_HOST)")
    hooks.add_argument("--port", type=int,
                       default=int(os.environ.get("SYNCBRIDGE_WEBHOOK_PORT", "8080")),
                       help="listen port (env SYNCBRIDGE_WEBHOOK_PORT)")
    add("demo", cmd_demo, "two embedded databases kept in step, end to end").add_argument(
        "--keep", action="store_true", help="leave the embedded server running at the end")
    bench = add("bench", cmd_bench, "measure throughput, latency and capture overhead")
    from . import bench as bench_mod

    bench_mod.add_arguments(bench)
    from . import reconcile_cli  # backfill, check, repair, bench-check

    reconcile_cli.register(add)
    add("doctor", cmd_doctor, "check every peer is ready (read-only); exit 0 when it is")
    return p


def cmd_doctor(args: argparse.Namespace) -> int:
    from syncbridge.engine import doctor

    code, lines = doctor.report(_config(args))
    print("\n".join(lines))
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"syncbridge: config error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
