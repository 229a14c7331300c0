"""How values travel between SQL Server and Postgres, exactly.

Toward SQL Server: a value asyncpg returned becomes a JSON-safe value for the
OPENJSON apply batch (`to_transport`, reference §2.1: decimals and integers as
strings, binary as hex without 0x, datetimeoffset as ISO 8601 with 6 fractional
digits and an offset). Toward Postgres: a value pyodbc returned becomes one
asyncpg accepts (`to_postgres`), and then the JSON text jsonb_populate_recordset
reads back into exactly that value (`pg_value`). Each conversion refuses a value
the other side cannot hold (NaN, Infinity, NUL characters) with a ValueError
naming the problem, so the drain loop can dead-letter that one row.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from syncbridge.engine.catalog import Table
from syncbridge.engine.sqlserver.types import SqlType, parse_mssql, parse_pg

# --- values: Postgres -> OPENJSON transport --------------------------------------------------


def to_transport(value: Any, mssql_type: str) -> Any:
    """One value read by asyncpg -> a JSON-safe value the apply batch's OPENJSON reads exactly.

    Integers and decimals become strings (JSON numbers would pass through a
    float somewhere), binary becomes hex without 0x (CONVERT style 2), times
    keep all 6 fractional digits, and tz-aware datetimes carry their offset.
    """
    if value is None:
        return None
    t = parse_mssql(mssql_type)
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be stored in SQL Server {mssql_type}")
        return format(value, "f")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be stored in SQL Server {mssql_type}")
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return _datetime_text(value, t)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.replace(tzinfo=None).isoformat(timespec="microseconds")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str):
        return value
    raise ValueError(f"cannot send a {type(value).__name__} to SQL Server {mssql_type}")


def _datetime_text(value: dt.datetime, t: SqlType) -> str:
    if value in (dt.datetime.max, dt.datetime.min) or value.year < 1:
        raise ValueError(f"{value} (infinity?) is outside SQL Server's 0001-9999 range")
    if t.kind == "timestamptz":
        if value.tzinfo is None:
            raise ValueError(f"{value} has no offset for SQL Server {t.spelled}")
        return value.isoformat(timespec="microseconds")
    if value.tzinfo is not None:
        raise ValueError(f"{value} carries an offset but SQL Server {t.spelled} has none")
    return value.isoformat(timespec="microseconds")


# --- values: pyodbc -> Postgres -------------------------------------------------------------

_DTO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?"
    r"\s*(?:([+-])(\d{2}):(\d{2})|Z)$"
)


def parse_datetimeoffset(text: str) -> dt.datetime:
    """'2024-05-01 10:00:00.1234560 +02:00' (CAST(col AS nvarchar(40))) -> aware datetime.

    A 7th fractional digit that is not 0 would be lost: the type check only lets
    datetimeoffset(<=6) feed Postgres, so a non-zero one is refused here loudly.
    """
    m = _DTO.match(text.strip())
    if not m:
        raise ValueError(f"not a datetimeoffset: {text!r}")
    day, hh, mi, ss, frac, sign, oh, om = m.groups()
    frac = (frac or "").ljust(7, "0")
    if frac[6] != "0":
        raise ValueError(f"{text!r} has 100-nanosecond ticks Postgres cannot hold")
    offset = dt.timedelta(hours=int(oh or 0), minutes=int(om or 0))
    tz = dt.timezone(-offset if sign == "-" else offset)
    d = dt.date.fromisoformat(day)
    return dt.datetime(d.year, d.month, d.day, int(hh), int(mi), int(ss), int(frac[:6]), tz)


def datetimeoffset_from_odbc(raw: bytes) -> dt.datetime:
    """Output converter for ODBC type -155 (SQL_SS_TIMESTAMPOFFSET), layout from SQLAlchemy.

    Registered with `cnxn.add_output_converter(-155, datetimeoffset_from_odbc)`
    as a safety net; the engine's own SELECTs already CAST such columns to text.
    """
    y, mo, d, h, mi, s, ns, oh, om = struct.unpack("<6hI2h", raw)
    tz = dt.timezone(dt.timedelta(hours=oh, minutes=om))
    return dt.datetime(y, mo, d, h, mi, s, ns // 1000, tz)


def to_postgres(value: Any, mssql_type: str, pg_type: str | None = None) -> Any:
    """One value read by pyodbc -> a value asyncpg accepts for the linked Postgres column."""
    if value is None:
        return None
    t = parse_mssql(mssql_type)
    if t.kind == "uuid":
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    if t.kind == "timestamptz":
        return value if isinstance(value, dt.datetime) else parse_datetimeoffset(str(value))
    if t.kind == "timestamp" and isinstance(value, str):
        return dt.datetime.fromisoformat(value[:26])
    if t.kind == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if t.kind == "time" and isinstance(value, str):
        return dt.time.fromisoformat(value[:15])
    if t.kind == "text" and isinstance(value, str):
        if "\x00" in value:
            raise ValueError("Postgres text cannot hold the NUL character (\\x00)")
        if pg_type is not None and parse_pg(pg_type).kind == "json":
            return value  # asyncpg's default json/jsonb codec takes the text
        return value
    if t.kind in ("decimal", "money") and not isinstance(value, Decimal):
        return Decimal(str(value))
    if t.kind == "bytes":
        return bytes(value)
    return value


class Unsendable:
    """A value read from SQL Server that Postgres cannot hold (NUL in text, 100 ns ticks).
    Stands in for the value so the conversion of the other rows goes on; encoding it for
    Postgres raises ValueError with `reason`, which dead-letters just that row."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unsendable: {self.reason}>"

    __str__ = __repr__


class BadRow(ValueError):
    """One row cannot be sent to the other side; the drain loop dead-letters just this row."""

    def __init__(self, index: int, column: str, reason: str) -> None:
        super().__init__(f"row {index}, column {column!r}: {reason}")
        self.index, self.column, self.reason = index, column, reason


def from_mssql(value: Any, mssql_type: str, pg_type: str | None = None) -> Any:
    """to_postgres, or an Unsendable stand-in: one bad value costs its row only."""
    try:
        return to_postgres(value, mssql_type, pg_type)
    except ValueError as e:
        return Unsendable(str(e))


def json_text(rows: list[dict[str, Any]]) -> str:
    """The one JSON parameter of a batch: compact, non-ASCII kept as is."""
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def json_array(texts: Iterable[str]) -> str:
    """A JSON array of JSON texts (keys, rows, dead-letter entries), never re-parsed: a
    numeric key like 0.12345678901234567890123 would become a float in Python."""
    return "[" + ",".join(texts) + "]"


def dedupe(objs: list[dict[str, Any]], nkeys: int) -> list[dict[str, Any]]:
    """Last row per key wins: a duplicate key would fail the @src primary key (§2.1)."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for obj in objs:
        seen[tuple(obj[f"c{i}"] for i in range(nkeys))] = obj
    return list(seen.values())


def encode_rows(table: Table, cols: list[str],
                rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in `cols` order as OPENJSON objects {"c0": ..}; BadRow names a value that
    cannot travel, before anything is sent."""
    out = []
    for n, row in enumerate(rows):
        obj = {}
        for i, c in enumerate(cols):
            try:
                obj[f"c{i}"] = to_transport(row.get(c), table.columns[c].type)
            except ValueError as e:
                raise BadRow(n, c, str(e)) from None
        out.append(obj)
    return out


def key_param(value: Any, spelled: str) -> Any:
    """A key value bound to a typed DECLARE: strings for uuid/time types (§2.5)."""
    if value is None or isinstance(value, bool | int | bytes):
        return value
    return to_transport(value, spelled)


# --- values -> Postgres jsonb text -----------------------------------------------------------


def pg_value(value: Any, pg_type: str) -> str:
    """One Python value (as mssql_types.to_postgres returns it) -> JSON text that
    jsonb_populate_recordset turns into exactly that value of a `pg_type` column.

    Decimal and int as raw JSON numbers (jsonb numbers are numeric: no float in
    between), datetimes ISO 8601 with microseconds (and the offset when aware),
    bytes as "\\x<hex>" (bytea's hex input), json as a string holding its text. Raises ValueError
    for a value Postgres cannot take (the row is dead-lettered, not the batch).
    """
    if value is None:
        return "null"
    if isinstance(value, Unsendable):
        raise ValueError(value.reason)
    if parse_pg(pg_type).kind == "json":
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        json.loads(text)  # not JSON -> ValueError (JSONDecodeError is one)
        if "\\u0000" in text:
            raise ValueError("Postgres jsonb cannot hold the NUL character (\\u0000)")
        # as a JSON string: the sink casts json columns from their text (pg_sql), so
        # JSON null arrives as the JSON value null, not as SQL NULL
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return json.dumps(str(value))  # 'NaN' is numeric text input, never a JSON number
        return format(value, "f")
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    if isinstance(value, dt.datetime | dt.time):
        return json.dumps(value.isoformat(timespec="microseconds"))
    if isinstance(value, dt.date):
        return json.dumps(value.isoformat())
    if isinstance(value, bytes | bytearray | memoryview):
        return json.dumps("\\x" + bytes(value).hex())
    if isinstance(value, uuid.UUID):
        return json.dumps(str(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("Postgres text cannot hold the NUL character (\\x00)")
        return json.dumps(value, ensure_ascii=False)
    raise ValueError(f"cannot send a {type(value).__name__} to Postgres {pg_type}")


def pg_object(names: Sequence[str], values: Sequence[Any], pg_types: Sequence[str]) -> str:
    """A JSON object text {name: value} built with pg_value."""
    return "{" + ",".join(
        f"{json.dumps(n, ensure_ascii=False)}:{pg_value(v, t)}"
        for n, v, t in zip(names, values, pg_types, strict=True)
    ) + "}"


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def norm(text: str) -> str:
    """A JSON key text in one canonical spelling (jsonb::text adds spaces)."""
    return json.dumps(loads(text), sort_keys=True, separators=(",", ":"), default=str)


def for_mssql(value: Any, mssql_type: str) -> Any:
    """A key value parsed from Postgres JSON -> what MssqlPeer.read_rows can bind."""
    if isinstance(value, str) and parse_mssql(mssql_type).kind == "bytes" \
            and value.startswith("\\x"):
        return bytes.fromhex(value[2:])
    return value


def states_json(states: Sequence[tuple[str, str | None]]) -> str:
    """@states: one entry per key (the last wins; two would fail the primary key)."""
    last = dict(states)
    return json_text([{"key": k, "image": v} for k, v in last.items()])
