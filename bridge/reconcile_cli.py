"""CLI commands of reconciliation: backfill, check, repair, bench-check.

Registered on the main parser by bridge/cli.py (`reconcile_cli.register(add)`).
Exit codes: 0 done / equal, 1 differences or rule violations, 2 an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from syncbridge.engine.config import Config, ConfigError, load

if TYPE_CHECKING:  # the engine modules are imported by the command that needs them
    from syncbridge.engine.reconcile.results import Diff

Add = Callable[..., argparse.ArgumentParser]


def _config(args: argparse.Namespace) -> Config:
    return load(args.config)


def cmd_backfill(args: argparse.Namespace) -> int:
    from syncbridge.engine.reconcile import backfill
    from syncbridge.engine.validate import shapes

    config = _config(args)
    shape = shapes(config, [args.link])[args.link]
    run = backfill.backfill(config, shape, args.side, args.where, args.keys, args.restart,
                            args.chunk, args.max_pending, progress=not args.quiet)
    state = "resumed and " if run.resumed else ""
    print(f"{args.link}: backfill {state}{run.status}: {run.signalled} key(s) of side "
          f"{run.side} signalled (run {run.id})")
    return 0 if run.status == "finished" else 2


def cmd_check(args: argparse.Namespace) -> int:
    from syncbridge.engine.reconcile import check
    from syncbridge.engine.validate import shapes

    config = _config(args)
    rules = check.rules(config)
    names = args.name or [*config.links, *rules]
    unknown = [n for n in names if n not in config.links and n not in rules]
    if unknown:
        raise ConfigError(f"no link or rule named {', '.join(map(repr, unknown))}")
    links = [n for n in names if n in config.links]
    link_shapes = shapes(config, links) if links else {}
    results = asyncio.run(check.check_all(config, link_shapes, [n for n in names if n in rules],
                                          settle=args.settle))
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=2, default=str))
    else:
        for r in results:
            print(check.summary(r))
            for d in sorted(r.diffs, key=_diff_order)[: args.show]:
                print("  " + _diff_line(d))
    return check.exit_code(results)


SHOW_VALUE = 40  # characters of each side's value shown per differing column


def _diff_order(d: Diff) -> tuple[str, str]:
    return d.kind, json.dumps(d.key_a or d.key_b or d.detail, sort_keys=True, default=str)


def _short(value: object) -> str:
    text = "NULL" if value is None else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= SHOW_VALUE else text[: SHOW_VALUE - 1] + "…"


def _diff_line(d: Diff) -> str:
    """kind, key (keys in sorted order) and, per differing column, a's and b's values."""
    key = json.dumps(d.key_a or d.key_b or d.detail, sort_keys=True, default=str,
                     ensure_ascii=False)
    line = f"{d.kind:<13} {key}"
    if d.kind == "different" and d.columns:
        a, b = d.detail.get("a", {}), d.detail.get("b", {})
        line += "".join(f" {c}: a={_short(a.get(c))} b={_short(b.get(c))}" for c in d.columns)
    return line


def cmd_repair(args: argparse.Namespace) -> int:
    from syncbridge.engine.reconcile import repair

    done = repair.repair(_config(args), args.link, args.prefer, dry_run=args.dry_run)
    print(done.message)
    if args.dry_run:
        for action in ("insert", "update", "delete"):
            for key in done.actions.get(action, []):
                print(f"  would {action:<6} {json.dumps(key, sort_keys=True, default=str)}")
    return 0


def cmd_bench_check(args: argparse.Namespace) -> int:
    from syncbridge.bridge.bench import check as bench_check

    return bench_check.main(args)


def register(add: Add) -> None:
    """Add the reconciliation subcommands to the main parser."""
    b = add("backfill", cmd_backfill, "signal every existing key of a link (resumable)")
    b.add_argument("link")
    b.add_argument("--side", choices=("a", "b"), help="source side (default: the link's source)")
    b.add_argument("--where", help="SQL condition on the source table's columns")
    b.add_argument("--keys", help="file with one key per line (JSON object or bare value)")
    b.add_argument("--restart", action="store_true", help="abandon an unfinished run, start over")
    b.add_argument("--chunk", type=int, default=1000, help="keys per transaction")
    b.add_argument("--max-pending", type=int, default=3000,
                   help="wait while this many backfill signals are still queued")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    c = add("check", cmd_check, "compare both sides of links and run rules "
                "(exit 0 equal, 1 different, 2 error, 3 in flight)")
    c.add_argument("name", nargs="*", help="links or rules (default: all)")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.add_argument("--settle", type=float, default=30.0,
                   help="seconds to wait for keys still in flight before reporting them")
    c.add_argument("--show", type=int, default=20, help="differing keys printed per link")
    r = add("repair", cmd_repair, "signal the keys the last check found different")
    r.add_argument("link")
    r.add_argument("--prefer", choices=("a", "b"), help="the side whose rows win")
    r.add_argument("--dry-run", action="store_true",
                   help="list the rows that would be inserted, updated and deleted, on which "
                        "side; signal nothing")
    # its options are added by cli.py, so that building the parser imports no benchmark
    add("bench-check", cmd_bench_check, "measure check, check with diffs, backfill and seed")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
