"""A verified event's payload → the key and the row of its mapped table.

Shared by the webhook app (which refuses an event whose key is missing, so the
sender learns at once) and the drain (which maps again from the stored
payload, so a config fix applies to events still queued).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncbridge.engine.webhooks.model import DEFAULT_ROOT, Source, TopicMap
from syncbridge.engine.webhooks.verify import EventError, lookup

_ABSENT = object()


@dataclass(frozen=True)
class MappedEvent:
    key: dict[str, Any]  # key column -> value
    row: dict[str, Any]  # column -> value, only the fields the event carries
    delete: bool


def data_root(source: Source, tmap: TopicMap, payload: dict[str, Any]) -> Any:
    """The object the topic's field paths are relative to."""
    if tmap.root is not None:
        return lookup(payload, tmap.root)
    if source.provider == "supabase" and payload.get("type") == "DELETE":
        return payload.get("old_record")  # a deleted row has no `record`
    return lookup(payload, DEFAULT_ROOT[source.provider])


def map_event(source: Source, tmap: TopicMap, payload: dict[str, Any]) -> MappedEvent:
    """Key and row of one event; EventError naming the first missing field.

    A field the event does not carry leaves its column as it is (a partial
    update); a field present as null sets NULL. Key fields, and the version
    field of an upsert, must be present and not null.
    """
    root = data_root(source, tmap, payload)
    if not isinstance(root, dict):
        raise EventError(f"payload has no object at {tmap.root or 'its root'!r}",
                         tmap.root or DEFAULT_ROOT[source.provider])
    row: dict[str, Any] = {}
    for column, path in tmap.columns.items():
        value = lookup(root, path, _ABSENT)
        if value is not _ABSENT:
            row[column] = value
    required = list(tmap.key)
    if tmap.version and not tmap.delete:
        required.append(tmap.version)
    for path in required:
        if row.get(tmap.column_of(path)) is None:
            raise EventError(f"missing field {path!r} (mapped to column "
                             f"{tmap.column_of(path)!r})", path)
    key = {tmap.column_of(p): row[tmap.column_of(p)] for p in tmap.key}
    return MappedEvent(key, row, tmap.delete)
