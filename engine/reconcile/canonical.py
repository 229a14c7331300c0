"""The canonical text of a row: one string per row that every engine computes alike.

`syncbridge check` compares two tables without moving their rows: each
database turns every row into this text, hashes it (MD5 of the UTF-8 bytes)
and sums 64 bits of the hashes per key range. The sums match only if the texts
match, so the text must not depend on the engine, the session (time zone,
DateStyle, extra_float_digits) or on how a value was typed in (1.50 vs 1.5,
jsonb key order). Three renderings of one definition live here:

- `pg_expr`: a Postgres SQL expression (what runs);
- `tsql_expr`: the T-SQL expression for a SQL Server side (rendered for the
  SQL Server peer, parsed in tests; SQL Server 2019+ for the UTF-8 collation);
- `py_value`: the Python reference, the arbiter the tests hold both against.

Per canonical class (a column pair's class is decided by both types, so an
`integer` column paired with `numeric` is compared as numeric):

| class     | text                                       | e.g.                              |
|-----------|--------------------------------------------|-----------------------------------|
| text      | the value as is                             | `Zoë`                             |
| int       | decimal digits                              | `-42`                             |
| numeric   | trailing fractional zeros removed           | `1.5` for 1.50, `100`, `0`        |
| float     | rounded to 15 (real: 6) significant digits, then as numeric | `0.1`, `3.14159` |
| bool      | `t` / `f`                                   | `t`                               |
| date      | `YYYY-MM-DD`                                | `2024-02-29`                      |
| time      | `HH:MM:SS.ffffff`                           | `23:59:59.000001`                 |
| timestamp | `YYYY-MM-DD HH:MM:SS.ffffff`                | `2024-02-29 23:59:59.999999`      |
| timestamptz | in UTC, microseconds, then `Z`            | `2024-05-01 08:00:00.123456Z`     |
| uuid      | lower-case with dashes                      | `6f1c0a52-...-2d9e9c1b0001`       |
| bytes     | lower-case hex, no prefix                   | `00ff10`                          |
| json      | jsonb text: keys by (byte length, bytes)    | `{"b": 1, "aa": [1, 2.50]}`       |
| other     | Postgres text output (arrays, interval ...) | Postgres-only columns             |

A field is `N` when NULL; else `<UTF-8 byte length>:<text>` for the classes
whose text may hold any character (text, other) and `:<text>` for the rest
(their text never holds U+001E: digits, dates, hex, uuid, escaped JSON);
fields are joined by U+001E. So NULL, '' and a separator inside a value stay
unambiguous and the text is injective on rows, while the costly values (jsonb
text, formatted timestamps) are computed once per row, not twice.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.sqlserver.sql import qi

SQL = sqlfiles.Queries("reconcile/sqlserver.sql")  # T-SQL: identifiers are [bracketed]

SEP = "\x1e"  # between fields; never ambiguous thanks to the length prefix
NULL = "N"
# Postgres <-> Postgres: the value's own text under the pinned session settings of
# pg_session (what the bridge carries), so check sees every difference the bridge
# could leave: 1.5 vs 1.50, '30 days' vs '1 mon', -0 vs 0, JSON null vs SQL NULL,
# NFC vs NFD, json key order. The classes above are the cross-engine form.
EXACT = "exact"
FREE_TEXT = ("text", "other", EXACT)  # classes whose text may hold any character

_CLASSES: dict[str, str] = {
    # Postgres
    "smallint": "int", "integer": "int", "bigint": "int",
    "numeric": "numeric", "decimal": "numeric", "money": "numeric",
    "real": "float4", "double precision": "float",
    "boolean": "bool", "text": "text", "character varying": "text", "character": "text",
    "citext": "text", "name": "text",
    "uuid": "uuid", "date": "date", "time without time zone": "time",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "json": "json", "jsonb": "json", "bytea": "bytes",
    # SQL Server
    "tinyint": "int", "int": "int", "smallmoney": "numeric", "float": "float", "bit": "bool",
    "varchar": "text", "nvarchar": "text", "char": "text", "nchar": "text", "ntext": "text",
    "uniqueidentifier": "uuid", "time": "time", "datetime": "timestamp",
    "datetime2": "timestamp", "smalldatetime": "timestamp", "datetimeoffset": "timestamptz",
    "varbinary": "bytes", "binary": "bytes", "image": "bytes",
}
# When a pair's two classes differ, the wider one decides (integer vs numeric -> numeric).
_WIDER = {frozenset({"int", "numeric"}): "numeric", frozenset({"int", "float"}): "float",
          frozenset({"float", "float4"}): "float4", frozenset({"int", "float4"}): "float4"}


def type_class(type_name: str) -> str:
    """Canonical class of a catalog type name (format_type on Postgres)."""
    t = type_name.lower().strip()
    if t.endswith("[]"):
        return "other"
    base = re.sub(r"\(.*?\)", "", t).strip()
    if base == "float" and "(" in t:  # SQL Server float(n<=24) is a 4-byte real
        return "float4" if int(t[t.index("(") + 1: t.index(")")]) <= 24 else "float"
    return _CLASSES.get(base, "other")


def pair_class(type_a: str, type_b: str) -> str:
    """The class both sides of a column pair are compared as."""
    ca, cb = type_class(type_a), type_class(type_b)
    if ca == cb:
        return ca
    return _WIDER.get(frozenset({ca, cb}), "other" if "other" in (ca, cb) else ca)


# -- Postgres -------------------------------------------------------------------------

_PG_TEXT = {
    "text": "{c}::text",
    "int": "{c}::text",
    "numeric": "trim_scale({c}::numeric)::text",
    # float8 -> numeric keeps 15 significant digits, float4 -> numeric 6 (DBL_DIG / FLT_DIG)
    "float": "trim_scale({c}::float8::numeric)::text",
    "float4": "trim_scale({c}::float4::numeric)::text",
    "bool": "case when {c} then 't' else 'f' end",
    "date": "to_char({c}, 'YYYY-MM-DD')",
    "time": "to_char({c}, 'HH24:MI:SS.US')",
    "timestamp": "to_char({c}, 'YYYY-MM-DD HH24:MI:SS.US')",
    "timestamptz": "to_char({c} at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || 'Z'",
    "uuid": "{c}::text",
    "bytes": "encode({c}, 'hex')",
    "json": "{c}::jsonb::text",
    "other": "{c}::text",
    EXACT: "{c}::text",
}


def pg_text(col: str, cls: str) -> str:
    """Postgres expression of one value's canonical text (NULL stays NULL); col is quoted."""
    return _PG_TEXT[cls].format(c=col)


def pg_field(col: str, cls: str) -> str:
    """Postgres expression of one field: 'N', '<bytes>:<text>' or ':<text>'."""
    t = pg_text(col, cls)
    if cls in FREE_TEXT:
        return f"coalesce(octet_length({t})::text || ':' || {t}, '{NULL}')"
    return f"coalesce(':' || {t}, '{NULL}')"


def pg_row(fields: Sequence[tuple[str, str]]) -> str:
    """Postgres expression of the row text over (quoted column, class) pairs."""
    return " || chr(30) || ".join(pg_field(c, k) for c, k in fields)


def pg_row_hash64(row_expr: str) -> str:
    """The first 64 bits of md5(row text) as a signed bigint (big-endian, as on SQL Server)."""
    return f"('x' || left(md5({row_expr}), 16))::bit(64)::bigint"


# -- SQL Server -----------------------------------------------------------------------

UTF8 = "Latin1_General_100_CI_AS_SC_UTF8"  # SQL Server 2019+: varchar holds UTF-8 bytes
_TRIM_ZEROS = ("CASE WHEN CHARINDEX('.', {s}) = 0 THEN {s} ELSE "
               "REPLACE(RTRIM(REPLACE(REPLACE(RTRIM(REPLACE({s}, '0', ' ')), ' ', '0'), "
               "'.', ' ')), ' ', '.') END")
_TSQL_TEXT = {
    "text": "CAST({c} AS nvarchar(max))",
    "int": "CONVERT(varchar(20), {c})",
    "numeric": _TRIM_ZEROS.format(s="CONVERT(varchar(60), {c})"),
    # documented gap: FORMAT 'G15' matches trim_scale(float8::numeric) for 1e-4 <= |v| < 1e15
    "float": "FORMAT({c}, 'G15', 'en-US')",
    "float4": "FORMAT(CAST({c} AS real), 'G6', 'en-US')",
    "bool": "CASE WHEN {c} = 1 THEN 't' WHEN {c} = 0 THEN 'f' END",
    "date": "CONVERT(varchar(10), {c}, 23)",
    "time": "CONVERT(varchar(15), CAST({c} AS time(6)))",
    "timestamp": "CONVERT(varchar(26), CAST({c} AS datetime2(6)), 121)",
    "timestamptz": "CONVERT(varchar(26), CAST(SWITCHOFFSET({c}, '+00:00') AS datetime2(6)), 121)"
                   " + 'Z'",
    "uuid": "LOWER(CONVERT(char(36), {c}))",
    "bytes": "LOWER(CONVERT(varchar(max), {c}, 2))",
    # SQL Server has no jsonb: the column must hold the text the bridge wrote (jsonb::text)
    "json": "CAST({c} AS nvarchar(max))",
    "other": "CAST({c} AS nvarchar(max))",
}


def tsql_text(col: str, cls: str) -> str:
    return _TSQL_TEXT[cls].format(c=col)


def tsql_field(col: str, cls: str) -> str:
    """T-SQL field: 'N', '<UTF-8 bytes>:<text>' (length in a UTF-8 collation) or ':<text>'."""
    t = tsql_text(col, cls)
    utf8 = f"CAST(({t}) COLLATE {UTF8} AS varchar(max))"
    if cls in FREE_TEXT:
        return f"COALESCE(CONVERT(varchar(20), DATALENGTH({utf8})) + ':' + {utf8}, '{NULL}')"
    return f"COALESCE(':' + {utf8}, '{NULL}')"


def tsql_row(fields: Sequence[tuple[str, str]]) -> str:
    return " + CHAR(30) + ".join(tsql_field(c, k) for c, k in fields)


def tsql_row_hash64(row_expr: str) -> str:
    """First 64 bits of MD5 over the UTF-8 bytes, big-endian signed: same number as Postgres."""
    return f"CAST(SUBSTRING(HASHBYTES('MD5', {row_expr}), 1, 8) AS bigint)"


def tsql_chunk_checksum(schema: str, table: str, columns: Sequence[tuple[str, str]],
                        key: Sequence[str], lower: bool, upper: bool) -> str:
    """The chunk checksum statement for a SQL Server side (pyodbc `?` parameters).

    columns are (name, class) in pair order; the key range is (lower, upper] over
    the key columns as a row comparison spelled out (T-SQL has no row values), so
    each bound binds k1, k1, k2, k1, k2, k3, ... (the prefix of every OR term).
    Identifiers are bracket-quoted by engine/sqlserver's `qi` (psycopg's
    Identifier would double-quote them), then spliced into the template as SQL.
    """
    row = tsql_row([(qi(c), k) for c, k in columns])
    where = [_tsql_row_compare([qi(k) for k in key], op)
             for present, op in ((lower, ">"), (upper, "<=")) if present]
    return SQL.render(
        "chunk_checksum", hash64=sql.SQL(tsql_row_hash64(row)),
        table=sql.SQL(".").join([sql.SQL(qi(schema)), sql.SQL(qi(table))]),
        where=sql.SQL(" WHERE " + " AND ".join(where) if where else ""))


def _tsql_row_compare(cols: list[str], op: str) -> str:
    """(c1, c2) > (?, ?) as ((c1 > ?) OR (c1 = ? AND c2 > ?)); <= ends with c_n <= ?."""
    strict = op.rstrip("=")
    terms = []
    for i, c in enumerate(cols):
        eqs = [f"{p} = ?" for p in cols[:i]]
        last = op if i == len(cols) - 1 else strict
        terms.append("(" + " AND ".join([*eqs, f"{c} {last} ?"]) + ")")
    return "(" + " OR ".join(terms) + ")"


# -- Python reference -----------------------------------------------------------------


def py_text(value: Any, cls: str) -> str | None:
    """Reference canonical text of one Python value (as psycopg returns it)."""
    if value is None:
        return None
    fn = _PY.get(cls)
    if fn is None:
        return str(value)
    return fn(value)


def py_field(value: Any, cls: str) -> str:
    t = py_text(value, cls)
    if t is None:
        return NULL
    return f"{len(t.encode())}:{t}" if cls in FREE_TEXT else f":{t}"


def py_row(values: Sequence[Any], classes: Sequence[str]) -> str:
    return SEP.join(py_field(v, c) for v, c in zip(values, classes, strict=True))


def _numeric(v: Any) -> str:
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "Infinity" if d > 0 else "-Infinity"
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def _float(digits: int) -> Callable[[float], str]:
    def render(v: float) -> str:
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return _numeric(Decimal(format(v, f".{digits}g")))
    return render


def _time(t: dt.time) -> str:
    return f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}"


def _date(d: dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _timestamp(ts: dt.datetime) -> str:
    return f"{_date(ts.date())} {_time(ts.time())}"


def _timestamptz(ts: dt.datetime) -> str:
    return _timestamp(ts.astimezone(dt.UTC).replace(tzinfo=None)) + "Z"


def _bytes(b: bytes | bytearray | memoryview) -> str:
    return bytes(b).hex()


def _json(v: Any) -> str:
    if isinstance(v, (str, bytes)):
        v = json.loads(v, parse_float=Decimal, parse_int=Decimal)
    return _jsonb_text(v)


def _jsonb_text(v: Any) -> str:
    """Postgres jsonb output: keys sorted by byte length then bytes, last duplicate wins."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float, Decimal)):
        d = v if isinstance(v, Decimal) else Decimal(str(v))
        return format(d, "f")
    if isinstance(v, str):
        return _json_string(v)
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{_json_string(k)}: {_jsonb_text(v[k])}" for k in keys) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_jsonb_text(x) for x in v) + "]"
    raise TypeError(f"not a JSON value: {v!r}")


_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
        "\t": "\\t"}


def _json_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESC:
            out.append(_ESC[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_PY: dict[str, Any] = {
    "text": str,
    "int": lambda v: str(int(v)),
    "numeric": _numeric,
    "float": _float(15),
    "float4": _float(6),
    "bool": lambda v: "t" if v else "f",
    "date": _date,
    "time": _time,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "uuid": lambda v: str(uuid.UUID(str(v))),
    "bytes": _bytes,
    "json": _json,
}
