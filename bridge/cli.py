"""The `syncbridge` command: migrate, install, run, status, pause, resume, set-rate, ...

Options may come before or after the subcommand (`syncbridge run --config x`).
Every option that has an environment variable names it in its help.

Exit codes:
  0  done (check: equal)
  1  differences found (check, demo) or rule violations
  2  a problem with the config or the command line (the message says where)
  3  a database refused or could not be reached (the message says what to do)
  130  interrupted
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from syncbridge.bridge import logs
from syncbridge.engine.config import Config, ConfigError, load

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR, EXIT_DATABASE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
log = logging.getLogger("syncbridge.cli")


def _config(args: argparse.Namespace, hub_only: bool = False) -> Config:
    config = load(args.config, hub_only=hub_only)
    logs.set_key_logging(config.setting("log_keys"))
    return config


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
    from syncbridge.engine.postgres import adopt

    for line in adopt.adopt(_config(args), args.link):
        print(line)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from syncbridge.engine.reconcile import seed
    from syncbridge.engine.validate import shapes

    config = _config(args)
    shape = shapes(config, [args.link])[args.link]
    try:
        run = seed.seed(config, shape, workers=args.workers, chunk_rows=args.chunk_rows,
                        progress=not args.quiet)
    except seed.Refused as e:
        print(f"syncbridge: seed refused: {e}", file=sys.stderr)
        return EXIT_ERROR
    except seed.Unvouched as e:
        print(f"syncbridge: seed failed: {e}", file=sys.stderr)
        return EXIT_ERROR
    rate = run.total / run.seconds if run.seconds else 0.0
    print(f"{args.link}: seed {'resumed and ' if run.resumed else ''}finished: {run.total} "
          f"row(s) {run.src} -> {run.dst} in {run.chunks} chunk(s), {run.seconds:.1f}s "
          f"({rate:,.0f} rows/s); {len(run.signals)} signal(s) from before the snapshot "
          f"dropped, later ones are applied by the bridge (run {run.id})")
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    from syncbridge.engine import install

    for line in install.uninstall(_config(args), args.link or None):
        print(line)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from syncbridge.bridge import daemon, reload

    config = _config(args)
    reload.check_webhooks_at_start(config)
    return daemon.run(config)  # SIGHUP: bridge.daemon reloads the config (bridge/reload.py)


def cmd_status(args: argparse.Namespace) -> int:
    from syncbridge.engine import status

    dsn = _config(args, hub_only=True).hub_peer.dsn
    if args.watch:
        return status.watch(dsn, args.watch, wide=args.wide)
    print(status.render(dsn, wide=args.wide))
    return 0


def cmd_systemd(args: argparse.Namespace) -> int:
    from syncbridge.bridge import units

    config = _config(args)
    config_path = str(Path(args.config).absolute())
    names = [args.unit] if args.unit else units.wanted(config)
    for name in names:
        text = units.render(config, name, config_path, args.exec, args.credentials_dir_for_units)
        if args.output_dir:
            path = Path(args.output_dir) / name
            path.write_text(text)
            print(f"wrote {path}")
        else:
            print(f"# {name}\n{text}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from syncbridge.bridge import demo

    return demo.main(keep=args.keep)


def cmd_webhooks(args: argparse.Namespace) -> int:
    from syncbridge.bridge.webhook_app import serve

    serve(_config(args, hub_only=True), args.host, args.port)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from syncbridge.bridge.bench import core as bench

    return bench.main(args)


def _common(p: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before and after the subcommand; defaults are set only once,
    on the top-level parser, so a subcommand's copy never overrides an earlier value."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument("--config", default=default(os.environ.get("SYNCBRIDGE_CONFIG",
                                                               "syncbridge.toml")),
                   help="config file (env SYNCBRIDGE_CONFIG; default ./syncbridge.toml)")
    p.add_argument("--credentials-dir",
                   default=default(os.environ.get("CREDENTIALS_DIRECTORY")),
                   help="directory of credential files named by dsn_credential and "
                        "secret_credential, for commands run outside the systemd unit "
                        "(env CREDENTIALS_DIRECTORY, which systemd sets)")
    p.add_argument("--log-level", default=default(os.environ.get("SYNCBRIDGE_LOG_LEVEL", "info")),
                   help="debug, info, warning, error (env SYNCBRIDGE_LOG_LEVEL)")
    p.add_argument("--log-format", choices=("text", "json"),
                   default=default(os.environ.get("SYNCBRIDGE_LOG_FORMAT", "text")),
                   help="one event per line as key=value or JSON (env SYNCBRIDGE_LOG_FORMAT)")


def version() -> str:
    try:
        return metadata.version("syncbridge")
    except metadata.PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syncbridge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"syncbridge {version()}")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int],
            help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        _common(sp, top=False)
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
    _seed_arguments(add("seed", cmd_seed, "first copy of a link into an empty sink table (COPY "
                        "in parallel key-range chunks, resumable), then hand over to the bridge"))
    add("run", cmd_run, "run the bridge in the foreground (logs to stderr)")
    st = add("status", cmd_status, "print sync.status from the hub (fits 100 columns)")
    st.add_argument("--wide", action="store_true", help="every column of sync.status")
    st.add_argument("--watch", type=float, nargs="?", const=2.0, default=None, metavar="SECONDS",
                    help="redraw every SECONDS (default 2) until interrupted")
    sd = add("systemd", cmd_systemd,
             "write the systemd units for this config (ExecStart, LoadCredential)")
    sd.add_argument("--output-dir", help="write the units here (e.g. /etc/systemd/system); "
                                         "default: print them")
    sd.add_argument("--unit", choices=("syncbridge.service", "syncbridge-webhooks.service"),
                    help="only this unit (default: the bridge, and the webhook receiver "
                         "when the config has webhook sources)")
    sd.add_argument("--exec", help="the syncbridge executable for ExecStart "
                                   "(default: the one running now)")
    sd.add_argument("--unit-credentials-dir", dest="credentials_dir_for_units",
                    default="/etc/syncbridge/credentials",
                    help="where LoadCredential reads the files (default /etc/syncbridge/"
                         "credentials)")
    hooks = add("webhooks", cmd_webhooks, "serve POST /webhooks/{source} (uvicorn); needs only "
                                          "the hub's DSN")
    hooks.add_argument("--host", default=os.environ.get("SYNCBRIDGE_WEBHOOK_HOST", "127.0.0.1"),
                       help="listen address (env SYNCBRIDGE_WEBHOOK_HOST)")
    hooks.add_argument("--port", type=int,
                       default=int(os.environ.get("SYNCBRIDGE_WEBHOOK_PORT", "8080")),
                       help="listen port (env SYNCBRIDGE_WEBHOOK_PORT)")
    add("demo", cmd_demo, "two embedded databases kept in step, end to end").add_argument(
        "--keep", action="store_true", help="leave the embedded server and its files at the end")
    _bench_arguments(add("bench", cmd_bench, "measure throughput, latency and capture overhead"))
    from syncbridge.bridge import reconcile_cli  # backfill, check, repair, bench-check

    reconcile_cli.register(add)
    from syncbridge.bridge import control_cli  # pause, resume, set-rate

    control_cli.register(add)
    _bench_check_arguments(sub.choices["bench-check"])
    add("doctor", cmd_doctor, "check every peer is ready (read-only); exit 0 when it is")
    return p


# The benchmarks' options are declared here, not in bridge/bench/: building the parser (every
# `syncbridge` command, `--help` included) must not import the benchmark modules.


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `syncbridge bench` (bridge/bench/core.py; --compare: bench/logical.py)."""
    p.add_argument("--dsn-a", help="source database (default: embedded PostgreSQL)")
    p.add_argument("--dsn-b", help="target database (default: embedded PostgreSQL)")
    p.add_argument("--only", default="bulk,latency,catchup,overhead",
                   help="comma-separated parts: bulk, latency, catchup, overhead, "
                        "webhooks (signed requests through the webhook app), scaleout "
                        "(catch-up across 8 links on 1 bridge vs 2), links (many busy links "
                        "on one bridge), soak (the bridge's RSS over a long steady load)")
    p.add_argument("--concurrency", type=int, default=32, help="webhooks: parallel senders")
    p.add_argument("--direction", choices=("a_to_b", "both"), default="a_to_b",
                   help="link direction (both = with conflict checking)")
    p.add_argument("--rows", type=int, default=100_000, help="rows for bulk and catch-up")
    p.add_argument("--rate", type=int, help="latency: transactions per second (default 200); "
                                            "links: rows per second per link (default 1000); "
                                            "soak: rows per second (default 1000)")
    p.add_argument("--seconds", type=float, help="latency, webhooks: duration (default 30); "
                                                 "links: time writing (default 20); "
                                                 "soak: duration (default 1800)")
    p.add_argument("--links", type=int, default=50, help="links: busy links (one table each)")
    p.add_argument("--idle-links", type=int, default=0,
                   help="links: extra links that carry nothing")
    p.add_argument("--warmup-seconds", type=float, default=180,
                   help="soak: samples before this are not growth (at most a third of the run)")
    p.add_argument("--sample-seconds", type=float, default=10,
                   help="soak: seconds between RSS samples")
    p.add_argument("--overhead-seconds", type=int, default=5, help="each pgbench run")
    p.add_argument("--runs", type=int, default=1, help="repeat and report the median")
    p.add_argument("--no-notify", action="store_true", help="link with NOTIFY off (polling)")
    p.add_argument("--batch-size", type=int, default=1000, help="signals per batch")
    p.add_argument("--durable", action="store_true",
                   help="embedded server with fsync and synchronous_commit on (default: off)")
    p.add_argument("--compare", choices=("logical",),
                   help="run the workloads on syncbridge and on native logical replication "
                        "and print both with the ratio (ignores --only)")
    p.add_argument("--json", metavar="FILE",
                   help="write the figures (the medians with --runs) as JSON")
    p.add_argument("--idle-seconds", type=float, default=10,
                   help="--compare: idle window for counting statements in the server log")


def _seed_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `syncbridge seed` (engine/reconcile/seed.py)."""
    p.add_argument("link")
    p.add_argument("--workers", type=int, default=4, help="parallel COPY connections")
    p.add_argument("--chunk-rows", type=int, default=100_000,
                   help="rows per chunk (a killed seed copies at most this many again per "
                        "worker)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _bench_check_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `syncbridge bench-check` (bridge/bench/check.py)."""
    from syncbridge.engine.reconcile.backfill import CHUNK, MAX_PENDING

    p.add_argument("--dsn-a", help="source database (default: embedded PostgreSQL)")
    p.add_argument("--dsn-b", help="target database (default: embedded PostgreSQL)")
    p.add_argument("--only", default="check,check_diff,backfill",
                   help="comma-separated parts: check, check_diff, backfill, seed (seed, "
                        "backfill and pg_dump | psql of the same table)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in bench_items")
    p.add_argument("--diffs", type=int, default=100, help="check_diff: differences made")
    p.add_argument("--rate", type=int, default=50, help="backfill: live transactions per second")
    p.add_argument("--runs", type=int, default=3, help="repeat and report the median")
    p.add_argument("--chunk", type=int, default=CHUNK, help="backfill: keys per chunk")
    p.add_argument("--max-pending", type=int, default=MAX_PENDING,
                   help="backfill: queued backfill signals allowed at once")


def cmd_doctor(args: argparse.Namespace) -> int:
    from syncbridge.engine import doctor

    code, lines = doctor.report(_config(args))
    print("\n".join(lines))
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    if args.credentials_dir:
        os.environ["CREDENTIALS_DIRECTORY"] = args.credentials_dir
    try:
        return args.fn(args)
    except ConfigError as e:
        from syncbridge.engine.errors import PeerUnreachable

        if isinstance(e, PeerUnreachable):
            print(f"syncbridge: {e}", file=sys.stderr)
            return EXIT_DATABASE
        print(f"syncbridge: config error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        from syncbridge.engine.errors import operator_message

        text = operator_message(e)
        if text is None:
            raise
        log.debug("event=command_failed", exc_info=True)
        print(f"syncbridge: {text}", file=sys.stderr)
        return EXIT_DATABASE


if __name__ == "__main__":
    sys.exit(main())
