"""CLI commands of link control: pause, resume, set-rate.

Registered on the main parser by bridge/cli.py (`control_cli.register(add)`).
Each calls the hub's sync.pause / sync.resume / sync.set_rate (the same SQL an
operator may run), which NOTIFY the running bridge; a link the config does not
name is a config error (exit 2), an unreachable hub exit 3.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from collections.abc import Callable

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config, ConfigError, did_you_mean, load
from syncbridge.engine.postgres import session as pg_session

SQL = sqlfiles.Queries("hub/status.sql")
Add = Callable[..., argparse.ArgumentParser]


def _link(args: argparse.Namespace) -> Config:
    """The config (only the hub's DSN is resolved), refusing a link it does not name."""
    config = load(args.config, hub_only=True)
    if args.link not in config.links:
        raise ConfigError(f"no link named {args.link!r} in the config"
                          + did_you_mean(args.link, config.links))
    return config


def _call(config: Config, name: str, *params: object) -> tuple | None:
    """Run one status.sql statement on the hub; the link's control row after it."""
    with pg_session.connect(config.hub_peer.dsn) as hub:
        hub.execute(sqlfiles.for_psycopg(SQL[name]), params)
        return hub.execute(sqlfiles.for_psycopg(SQL["link_control"]), (params[0],)).fetchone()


def _rate(value: float | None) -> str:
    return f"{value:g} rows/s" if value else "unlimited"


def cmd_pause(args: argparse.Namespace) -> int:
    reason = args.reason or f"paused by {getpass.getuser()} on {socket.gethostname()}"
    held, _ = _call(_link(args), "pause_link", args.link, reason) or (reason, None)
    print(f"{args.link}: paused: {held}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    row = _call(_link(args), "resume_link", args.link)
    held = row[0] if row else None
    print(f"{args.link}: " + (f"resumed, but still held: {held}" if held else "resumed"))
    return 0


def cmd_set_rate(args: argparse.Namespace) -> int:
    row = _call(_link(args), "set_rate", args.link, args.rows_per_second)
    print(f"{args.link}: rate limit {_rate(row[1] if row else None)}")
    return 0


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of rows per second"
                                         ) from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: rows per second must be >= 0 "
                                         "(0 = unlimited)")
    return value


def register(add: Add) -> None:
    p = add("pause", cmd_pause, "hold a link: nothing is applied, capture keeps queueing "
                                "(sync.pause); takes effect within about a second")
    p.add_argument("link")
    p.add_argument("--reason", help="shown in sync.status as `paused: REASON` "
                                    "(default: who paused it, from where)")
    add("resume", cmd_resume, "let a paused link flow again (sync.resume)").add_argument("link")
    r = add("set-rate", cmd_set_rate, "hold a link to N rows per second, both directions "
                                      "together (sync.set_rate); 0 = unlimited")
    r.add_argument("link")
    r.add_argument("rows_per_second", type=_non_negative, metavar="N")
