"""`syncbridge repair`: send the keys the last check found through the pipeline.

Repair never writes rows itself: it signals the differing keys on the side
whose rows should win, and the bridge applies that side's current rows (or
deletes keys that side does not have), with the usual batching, ordering and
crash safety. Direction is respected: a one-way link is repaired only from its
source side; a two-way link takes --prefer, else its conflict policy
(a_wins / b_wins); newest_wins and manual links need --prefer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import psycopg

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config, ConfigError

SIGNAL_CHUNK = 1_000  # keys per insert into the source queue


SQL = sqlfiles.Queries("queries/reconcile.sql")


@dataclass
class Repair:
    run_id: int | None
    side: str | None
    signalled: int
    message: str
    actions: dict[str, list[dict]] = field(default_factory=dict)  # insert/update/delete -> keys


# What signalling a key of the winning side does to the other side, by check diff kind.
_ACTION = {("a", "missing_on_b"): "insert", ("b", "missing_on_a"): "insert",
           ("a", "missing_on_a"): "delete", ("b", "missing_on_b"): "delete",
           ("a", "different"): "update", ("b", "different"): "update"}


def _effect(link: str, side: str, target: str, actions: dict[str, list[dict]]) -> str:
    n = {a: len(actions.get(a, [])) for a in ("insert", "update", "delete")}
    return (f"on side {'b' if side == 'a' else 'a'} ({target}) this inserts {n['insert']}, "
            f"updates {n['update']} and deletes {n['delete']} row(s)")


def winning_side(config: Config, link: str, prefer: str | None) -> str:
    """The side whose rows a repair sends; ConfigError when direction forbids it."""
    lk = config.links[link]
    if lk.direction in ("a_to_b", "b_to_a"):
        source = lk.direction[0]
        if prefer not in (None, source):
            raise ConfigError(f"link {link!r} is one-way {lk.direction}: repair can only send "
                              f"side {source}'s rows, not --prefer {prefer}")
        return source
    if prefer in ("a", "b"):
        return prefer
    if lk.conflict in ("a_wins", "b_wins"):
        return lk.conflict[0]
    raise ConfigError(f"link {link!r} has conflict policy {lk.conflict}: say which side wins "
                      "with --prefer a|b")


def repair(config: Config, link: str, prefer: str | None = None,
           dry_run: bool = False) -> Repair:
    """Signal the keys of the link's last check on the winning side (`dry_run`: only say
    which rows of the other side that would insert, update and delete)."""
    if link not in config.links:
        raise ConfigError(f"no link named {link!r} in the config")
    side = winning_side(config, link, prefer)
    other = config.links[link].side("b" if side == "a" else "a")
    target = f"{other.peer} {other.qualified}"
    with psycopg.connect(config.hub_peer.dsn, autocommit=True) as hub:
        last = hub.execute(sqlfiles.for_psycopg(SQL["last_link_check"]), (link,)).fetchone()
        if last is None:
            return Repair(None, side, 0, f"{link}: never checked; run `syncbridge check {link}`")
        run_id, verdict, _ = last
        if verdict != "different":
            return Repair(run_id, side, 0, f"{link}: last check (run {run_id}) was {verdict}; "
                                           "nothing to repair")
        diffs = hub.execute(sqlfiles.for_psycopg(SQL["check_diffs"]), (run_id,)).fetchall()
        keys = [json.loads(d[1] if side == "a" else d[2]) for d in diffs]
        actions: dict[str, list[dict]] = {}
        for (kind, *_), key in zip(diffs, keys, strict=True):
            if (side, kind) in _ACTION:
                actions.setdefault(_ACTION[side, kind], []).append(key)
        for found in actions.values():
            found.sort(key=lambda k: json.dumps(k, sort_keys=True))
        effect = _effect(link, side, target, actions)
        if dry_run:
            return Repair(run_id, side, 0, f"{link}: dry run, nothing signalled: repairing "
                                           f"from side {side} (check run {run_id}) would "
                                           f"signal {len(keys)} key(s); " + effect, actions)
        _signal(config, link, side, keys)
        hub.execute(sqlfiles.for_psycopg(SQL["mark_repaired"]), (run_id,))
    return Repair(run_id, side, len(keys),
                  f"{link}: signalled {len(keys)} key(s) of side {side} from check run "
                  f"{run_id}; " + effect, actions)


def _signal(config: Config, link: str, side: str, keys: list[dict]) -> None:
    """Queue key signals at the side's database, as capture would, and wake the bridge."""
    dsn = config.peers[config.links[link].side(side).peer].dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(0, len(keys), SIGNAL_CHUNK):
            with conn.transaction():
                conn.execute(sqlfiles.for_psycopg(SQL["signal_keys"]),
                             (link, side, "syncbridge:repair",
                              json.dumps(keys[i: i + SIGNAL_CHUNK])))
                conn.execute(sqlfiles.for_psycopg(SQL["notify"]), (f"{link}:{side}",))
