"""The contract between the bridge and its drains, whatever the dialects.

A drain moves one (link, direction): it claims a batch of changes at the
source, reads the current rows, decides (two-way links), applies them and
records the batch in one sink transaction, then finishes at the source. The
bridge (bridge/daemon.py) only schedules drains through `Drain`; everything a
batch carries and records is typed here:

- `Item`: one row (or key to delete) of a batch, in every naming it needs;
- `RowProblem`: a row the sink rejected (dead-lettered) or deferred (retried later);
- `Outcome`: what one batch did;
- `BatchRecord`: what a sink stores with the batch (sync.applied_batches), so
  the source's follow-ups are replayed from it after a crash;
- `SchemaChanged`: raised by a drain whose tables changed shape; the bridge
  pauses the link until `syncbridge adopt`.

Rows and keys stay JSON texts made by the database: a value never becomes a
Python float or datetime on the way, so digits and representations are kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from syncbridge.engine import errors
from syncbridge.engine.config import Link

log = logging.getLogger("syncbridge.drain")


def json_array(texts: list[str]) -> str:
    """A JSON array from JSON texts (no parse, no re-encode)."""
    return "[" + ",".join(texts) + "]"


def json_object(**fields: str) -> str:
    """A JSON object from JSON texts."""
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"


@dataclass
class Item:
    """One row to upsert (or key to delete) of a batch.

    The key has one name per use: `source_key` as queued at the source,
    `sink_key` in the sink's column names, `state_key` named as on side a (the
    key of sync.row_state on both sides)."""

    source_key: str  # jsonb text, source column names (as queued)
    sink_key: str  # jsonb text, sink column names
    state_key: str  # jsonb text, side-a names: the row_state key
    payload: str  # the row in sink names, or the sink key for a delete
    image: str | None  # the source row named as on side a (two-way links), None = absent
    attempts: int = 0


@dataclass(frozen=True)
class RowProblem:
    """A row the sink rejected: dead-lettered, or deferred (retried later, e.g. a
    child row whose parent has not arrived yet)."""

    key: str  # jsonb text of the source key
    error: str
    defer: bool

    def json(self) -> str:
        return json_object(key=self.key, error=json.dumps(self.error),
                           defer=json.dumps(self.defer))


@dataclass
class Outcome:
    """What a batch did. Lists of JSON texts: rows never pass through Python values."""

    upserts: int = 0
    deletes: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    applied: list[Item] = field(default_factory=list)
    synced: list[str] = field(default_factory=list)  # {key, image}: new base images
    conflicts: list[str] = field(default_factory=list)  # sync.conflicts entries
    resignal: list[str] = field(default_factory=list)  # sink keys to send back

    @property
    def deferred(self) -> int:
        return sum(p.defer for p in self.problems)

    def record(self, truncated: bool = False) -> BatchRecord:
        return BatchRecord(json_array([p.json() for p in self.problems]),
                           json_array(self.synced), json_array(self.conflicts), truncated)


@dataclass(frozen=True)
class BatchRecord:
    """What a sink records with a batch, in the sink's transaction (JSON array texts).

    `problems` is stored in sync.applied_batches.dead: rejected and deferred rows."""

    problems: str = "[]"
    synced: str = "[]"
    conflicts: str = "[]"
    truncated: bool = False

    @classmethod
    def from_row(cls, row: Any) -> BatchRecord:
        """The record as sync.applied_batches holds it (batch_record query)."""
        return cls(row["dead"], row["synced"], row["conflicts"], row["truncated"])

    @property
    def has_problems(self) -> bool:
        return self.problems != "[]"


class SchemaChanged(Exception):
    """A linked table's columns or key changed since the bridge validated the link.

    The link must pause (its signals keep queueing) until `syncbridge adopt`
    re-validates it: applying batches with the old shape would silently leave a
    new column unsynced, and comparing images of two shapes would call every
    edit a conflict."""

    def __init__(self, link: str, peer: str, table: str, detail: str) -> None:
        self.link, self.peer, self.table, self.detail = link, peer, table, detail
        super().__init__(f"schema changed on peer {peer}: {detail}")


class Drain(Protocol):
    """What the bridge knows of a drain (one link, one direction)."""

    link: Link
    src: str  # the side changes come from ('a' or 'b')
    dst: str  # the side written
    open_dead_letters: bool  # set by the bridge: this side has open dead letters to close
    more: bool  # after drain_once: more may be queued now (False: it took all it saw)

    @property
    def name(self) -> str:
        """'link:a->b', for logs and sync.status."""

    @property
    def poll_interval(self) -> float | None:
        """Seconds between polls of a source without NOTIFY; None = woken by NOTIFY."""

    @property
    def queue_peer(self) -> str | None:
        """The Postgres peer whose sync.queue feeds this drain (None: change tracking)."""

    async def recover(self) -> int:
        """Finish every batch a previous run claimed and did not finish."""

    async def drain_once(self) -> int:
        """Apply one batch; the number of changes it consumed (0 = idle)."""

    async def depth(self) -> tuple[int, Any]:
        """(changes waiting, when the oldest was queued) for sync.status."""

    async def send_canary(self) -> Any:
        """Queue an end-to-end canary; its sent time, or None if this drain has none."""

    async def flush(self) -> None:
        """Wait for the writes the drain made off its batches' path (status counts)."""

    async def write_settled(self, row: dict[str, str | None] | None, sink_key: str) -> None:
        """Write an operator's settled merge on this drain's sink, as the bridge."""


T = TypeVar("T")


async def isolate(items: list[T], attempt: Callable[[list[T]], Awaitable[int]],
                  row_error: Callable[[BaseException], bool],
                  reject: Callable[[T, BaseException], None]) -> tuple[int, list[T]]:
    """Run attempt(items); on a row error bisect down to the rows that fail alone.

    reject(item, exc) is told about each such row. Returns the sum of what the
    successful attempts returned and the items they covered. `attempt` must
    undo its own partial work on failure (a savepoint, or a whole transaction).
    """
    if not items:
        return 0, []
    try:
        n = await attempt(items)
    except Exception as e:
        if not row_error(e):
            raise
        if len(items) == 1:
            reject(items[0], e)
            return 0, []
        mid = len(items) // 2
        n1, ok1 = await isolate(items[:mid], attempt, row_error, reject)
        n2, ok2 = await isolate(items[mid:], attempt, row_error, reject)
        return n1 + n2, ok1 + ok2
    return n, list(items)


def problem(drain: str, source_key: str, exc: BaseException, defer: bool) -> RowProblem:
    """A rejected row, logged by its key and error only (never its values)."""
    log.warning("event=row_%s link=%s key=%s error=%s", "deferred" if defer else "dead",
                drain, source_key, errors.describe_safe(exc))
    return RowProblem(source_key, errors.describe(exc), defer)
