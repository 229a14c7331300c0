"""Column types between Postgres and SQL Server: what fits, and why not.

A link is refused at startup when a source column can hold a value the sink
column cannot store exactly (sync must never round, truncate or drop an
offset silently). `explain` says why in words an operator can act on;
`compatible` is its boolean. `type_checker` adapts them to the two-argument
`check_types` callback of `catalog.shape`.

How values of these types travel is engine/sqlserver/convert.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from syncbridge.engine import catalog

POSTGRES = "postgres"
SQLSERVER = "sqlserver"
PG_MICROSECONDS = 6  # fractional-second digits Postgres keeps for timestamp/time
MSSQL_MAX_DECIMAL = 38  # largest decimal precision on SQL Server
MAX = -1  # length of (max) / unbounded types

# Digits of the largest value of each integer width, for int -> decimal checks.
_INT_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}
_INT_RANGE = {8: (0, 255), 16: (-(2**15), 2**15 - 1), 32: (-(2**31), 2**31 - 1),
              64: (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class SqlType:
    """One column type reduced to what matters for exactness.

    kind: uuid, text, bool, int, decimal, float, timestamp, timestamptz, date,
    time, timetz, bytes, json, money, readonly, unknown.
    size: text/bytes length (MAX = unbounded), int bits, float bits,
    decimal precision (None = unbounded numeric), time fractional digits.
    scale: decimal scale. unicode: text holds any Unicode character.
    fixed: blank-padded (char/nchar/binary). spelled: the original text.
    """

    kind: str
    size: int | None = None
    scale: int = 0
    unicode: bool = True
    fixed: bool = False
    spelled: str = ""
    dialect: str = POSTGRES


def _split(spelled: str) -> tuple[str, list[str], str]:
    """'timestamp(3) without time zone' -> ('timestamp', ['3'], 'without time zone')."""
    text = " ".join(spelled.strip().lower().split())
    if "(" not in text:
        for tail in (" without time zone", " with time zone"):
            if text.endswith(tail):
                return text.removesuffix(tail), [], tail.strip()
        return text, [], ""
    base, _, rest = text.partition("(")
    inner, _, tail = rest.partition(")")
    return base.strip(), [a.strip() for a in inner.split(",") if a.strip()], tail.strip()


def _num(args: list[str], i: int, default: int | None) -> int | None:
    if len(args) <= i:
        return default
    return MAX if args[i] == "max" else int(args[i])


def parse_pg(spelled: str) -> SqlType:
    """Reduce a Postgres type as format_type() spells it (aliases accepted)."""
    base, args, tail = _split(spelled)
    if spelled.strip().endswith("[]"):
        return SqlType("unknown", spelled=spelled)
    if base in ("timestamp", "timestamptz") or base.startswith("timestamp"):
        tz = base == "timestamptz" or tail == "with time zone"
        return SqlType("timestamptz" if tz else "timestamp", _num(args, 0, PG_MICROSECONDS),
                       spelled=spelled)
    if base in ("time", "timetz"):
        tz = base == "timetz" or tail == "with time zone"
        return SqlType("timetz" if tz else "time", _num(args, 0, PG_MICROSECONDS), spelled=spelled)
    simple = {
        "uuid": SqlType("uuid"), "boolean": SqlType("bool"), "bool": SqlType("bool"),
        "smallint": SqlType("int", 16), "int2": SqlType("int", 16),
        "integer": SqlType("int", 32), "int": SqlType("int", 32), "int4": SqlType("int", 32),
        "bigint": SqlType("int", 64), "int8": SqlType("int", 64),
        "real": SqlType("float", 24), "float4": SqlType("float", 24),
        "double precision": SqlType("float", 53), "float8": SqlType("float", 53),
        "date": SqlType("date"), "bytea": SqlType("bytes", MAX),
        "json": SqlType("json", 0), "jsonb": SqlType("json", 1), "money": SqlType("money"),
        "text": SqlType("text", MAX),
    }
    if base in simple:
        return _spelled(simple[base], spelled)
    if base in ("numeric", "decimal"):
        if not args:
            return SqlType("decimal", None, spelled=spelled)
        return SqlType("decimal", _num(args, 0, None), _num(args, 1, 0) or 0, spelled=spelled)
    if base in ("character varying", "varchar"):
        return SqlType("text", _num(args, 0, MAX), spelled=spelled)
    if base in ("character", "char", "bpchar"):
        return SqlType("text", _num(args, 0, 1), fixed=True, spelled=spelled)
    return SqlType("unknown", spelled=spelled)


def parse_mssql(spelled: str) -> SqlType:
    """Reduce a SQL Server type as `mssql_peer.read_table` spells it (e.g. 'nvarchar(max)')."""
    base, args, _ = _split(spelled)
    simple = {
        "uniqueidentifier": SqlType("uuid"), "bit": SqlType("bool"),
        "tinyint": SqlType("int", 8), "smallint": SqlType("int", 16),
        "int": SqlType("int", 32), "bigint": SqlType("int", 64),
        "real": SqlType("float", 24), "date": SqlType("date"),
        "money": SqlType("money"), "smallmoney": SqlType("money"),
        # datetime ticks are 1/300 s and smalldatetime whole minutes: both fit a
        # Postgres timestamp, neither can take one back.
        "datetime": SqlType("timestamp", 3, fixed=True),
        "smalldatetime": SqlType("timestamp", 0, fixed=True),
        "rowversion": SqlType("readonly"), "timestamp": SqlType("readonly"),
    }
    if base in simple:
        return _spelled(simple[base], spelled)
    if base == "float":
        bits = _num(args, 0, 53) or 53
        return SqlType("float", 24 if bits <= 24 else 53, spelled=spelled)
    if base in ("decimal", "numeric"):
        return SqlType("decimal", _num(args, 0, 18), _num(args, 1, 0) or 0, spelled=spelled)
    if base in ("datetime2", "datetimeoffset", "time"):
        kind = {"datetime2": "timestamp", "datetimeoffset": "timestamptz", "time": "time"}[base]
        return SqlType(kind, _num(args, 0, 7), spelled=spelled)
    if base in ("nvarchar", "varchar", "nchar", "char"):
        return SqlType("text", _num(args, 0, 1), unicode=base.startswith("n"),
                       fixed=base in ("nchar", "char"), spelled=spelled)
    if base in ("varbinary", "binary"):
        return SqlType("bytes", _num(args, 0, 1), fixed=base == "binary", spelled=spelled)
    return SqlType("unknown", spelled=spelled)


def _spelled(t: SqlType, spelled: str) -> SqlType:
    return SqlType(t.kind, t.size, t.scale, t.unicode, t.fixed, spelled)


def parse(dialect: str, spelled: str) -> SqlType:
    if dialect == SQLSERVER:
        t = parse_mssql(spelled)
        return SqlType(t.kind, t.size, t.scale, t.unicode, t.fixed, t.spelled, SQLSERVER)
    return parse_pg(spelled)


# --- compatibility --------------------------------------------------------------------------


def explain(src_dialect: str, src_type: str, dst_dialect: str, dst_type: str) -> str | None:
    """Why a src column cannot feed a dst column exactly; None when it can."""
    if src_dialect == dst_dialect == POSTGRES:
        if catalog.compatible(src_type, dst_type):
            return None
        return f"{dst_type} cannot hold every value of {src_type}"
    s, d = parse(src_dialect, src_type), parse(dst_dialect, dst_type)
    if s.kind == "unknown":
        return f"{src_type} is not a type syncbridge can carry to {dst_dialect}"
    if d.kind == "unknown":
        return f"{dst_type} is not a type syncbridge can write on {dst_dialect}"
    if d.kind == "readonly":
        return f"{dst_type} is read-only on SQL Server (rowversion): it cannot be written"
    if s.kind == "readonly":
        return f"{src_type} is SQL Server's rowversion; exclude it from the link"
    rule = _RULES.get((s.kind, d.kind))
    if rule is None:
        return f"{dst_type} cannot hold values of {src_type} (different kinds of data)"
    return rule(s, d)


def compatible(src_dialect: str, src_type: str, dst_dialect: str, dst_type: str) -> bool:
    """True when every value of src_type stores exactly in dst_type."""
    return explain(src_dialect, src_type, dst_dialect, dst_type) is None


def type_checker(a_dialect: str, b_dialect: str) -> Callable[[str, str], bool]:
    """A `check_types(src, dst)` callback for `catalog.shape` on a link a <-> b.

    `shape` calls it as (a_type, b_type) for a->b and (b_type, a_type) for
    b->a without saying which; for a mixed link the spellings tell the sides
    apart (format_type() never says nvarchar, datetime2 or uniqueidentifier,
    and SQL Server never says integer, boolean or 'with time zone'). Spellings
    both dialects share (bigint, smallint, real, date) mean the same type in
    both, so the order then does not matter.
    """

    def check(src: str, dst: str) -> bool:
        if a_dialect == b_dialect:
            return compatible(a_dialect, src, b_dialect, dst)
        if _belongs(b_dialect, src) and not _belongs(b_dialect, dst) or (
            _belongs(a_dialect, dst) and not _belongs(a_dialect, src)
        ):
            return compatible(b_dialect, src, a_dialect, dst)
        return compatible(a_dialect, src, b_dialect, dst)

    return check


def _belongs(dialect: str, spelled: str) -> bool:
    return parse(dialect, spelled).kind != "unknown"


def _size(t: SqlType) -> str:
    return "unbounded" if t.size == MAX else str(t.size)


def _text(s: SqlType, d: SqlType) -> str | None:
    if not d.unicode and s.unicode:
        return (f"{d.spelled} is not Unicode: characters outside its code page would be lost; "
                f"use {_wide(d)}")
    if d.fixed != s.fixed:
        return f"{d.spelled} and {s.spelled} pad differently (fixed vs variable length)"
    if d.size == MAX:
        return None
    if s.size == MAX:
        return f"{d.spelled} is narrower than {s.spelled}; use {_wide(d)}"
    assert s.size is not None and d.size is not None
    # Postgres counts characters; SQL Server's nvarchar(n) counts UTF-16 code
    # units, and a character outside the BMP (an emoji) takes two of them.
    # nvarchar and varchar sources never hold more characters than their n.
    need = s.size * 2 if s.dialect == POSTGRES and d.dialect == SQLSERVER else s.size
    if d.size < need:
        return (f"{d.spelled} is narrower than {s.spelled} ({need} UTF-16 code units needed: "
                f"an emoji takes two); use {_wide(d)}")
    return None


def _wide(d: SqlType) -> str:
    return "nvarchar(max)" if d.dialect == SQLSERVER else "text"


def _int(s: SqlType, d: SqlType) -> str | None:
    (slo, shi), (dlo, dhi) = _INT_RANGE[s.size or 32], _INT_RANGE[d.size or 32]
    if dlo <= slo and shi <= dhi:
        return None
    return f"{d.spelled} cannot hold every value of {s.spelled} ({slo}..{shi})"


def _int_to_decimal(s: SqlType, d: SqlType) -> str | None:
    if d.size is None or d.size - d.scale >= _INT_DIGITS[s.size or 32]:
        return None
    return f"{d.spelled} has {d.size - d.scale} integer digits; {s.spelled} needs " \
           f"{_INT_DIGITS[s.size or 32]}"


def _decimal_to_int(s: SqlType, d: SqlType) -> str | None:
    if s.size is not None and s.scale == 0 and s.size < _INT_DIGITS[d.size or 32]:
        return None
    return f"{d.spelled} cannot hold every value of {s.spelled} (fractions or too many digits)"


def _decimal(s: SqlType, d: SqlType) -> str | None:
    if s.size is None:
        if d.size is None:
            return None
        return (f"{s.spelled} without precision holds values {d.spelled} cannot "
                f"(and NaN); declare it numeric(p,s) with p <= {MSSQL_MAX_DECIMAL}")
    if d.size is None:
        return None
    if s.scale > d.scale:
        return f"{d.spelled} keeps {d.scale} decimal places; {s.spelled} has {s.scale}"
    if s.size - s.scale > d.size - d.scale:
        return (f"{d.spelled} has {d.size - d.scale} integer digits; {s.spelled} has "
                f"{s.size - s.scale}")
    return None


def _money(s: SqlType, d: SqlType) -> str | None:
    # SQL Server money is exactly decimal(19,4); Postgres money depends on lc_monetary.
    if s.dialect == SQLSERVER and d.kind == "decimal":
        as_decimal = SqlType("decimal", 19, 4, spelled=s.spelled, dialect=SQLSERVER)
        return _decimal(as_decimal, d)
    if s.dialect == d.dialect == SQLSERVER:
        return None if s.spelled == d.spelled or d.spelled.startswith("money") else \
            f"{d.spelled} is narrower than {s.spelled}"
    return (f"{s.spelled} -> {d.spelled}: Postgres money is locale-dependent; "
            "use numeric(19,4) / decimal(19,4) on both sides")


def _float(s: SqlType, d: SqlType) -> str | None:
    if (s.size or 53) <= (d.size or 53):
        return None
    return f"{d.spelled} is a 4-byte float and would round values of {s.spelled}"


def _fraction(what: str) -> Callable[[SqlType, SqlType], str | None]:
    def rule(s: SqlType, d: SqlType) -> str | None:
        if d.fixed and not s.fixed:
            return (f"{d.spelled} rounds to its own ticks and cannot hold {s.spelled}; "
                    "use datetime2(6)")
        if (s.size or 0) <= (d.size or 0):
            return None
        unit = "microseconds" if (s.size or 0) == 6 else f"{s.size} fractional digits"
        if (s.size or 0) == 7:
            unit = "100-nanosecond ticks"
        return f"{d.spelled} cannot hold {unit} from {s.spelled}{what}"

    return rule


def _mixed_tz(s: SqlType, d: SqlType) -> str:
    if s.kind == "timestamptz":
        return (f"{d.spelled} has no time zone: the instant in {s.spelled} would be "
                "reinterpreted; use timestamptz / datetimeoffset on both sides")
    return (f"{s.spelled} has no time zone, so {d.spelled} would have to invent an "
            "offset; use timestamp / datetime2 on both sides")


def _bytes(s: SqlType, d: SqlType) -> str | None:
    if d.fixed != s.fixed:
        return f"{d.spelled} pads to a fixed length; {s.spelled} does not"
    if d.size == MAX or (s.size != MAX and (s.size or 0) <= (d.size or 0)):
        return None
    return f"{d.spelled} is narrower than {s.spelled}; use varbinary(max)"


def _json_to_text(s: SqlType, d: SqlType) -> str | None:
    if d.size == MAX and d.unicode and not d.fixed:
        return None
    return f"JSON from {s.spelled} needs nvarchar(max), not {d.spelled}"


def _text_to_json(s: SqlType, d: SqlType) -> str | None:
    # Only text that holds JSON arrives (guard it with CHECK (ISJSON(col) = 1)); a
    # row that is not JSON fails on apply and goes to the dead letters.
    if s.unicode:
        return None
    return f"{s.spelled} is not Unicode; hold JSON in nvarchar(max)"


def _same(_: SqlType, __: SqlType) -> str | None:
    return None


def _never(message: str) -> Callable[[SqlType, SqlType], str]:
    def rule(s: SqlType, d: SqlType) -> str:
        return message.format(s=s.spelled, d=d.spelled)

    return rule


_RULES: dict[tuple[str, str], Callable[[SqlType, SqlType], str | None]] = {
    ("uuid", "uuid"): _same,
    ("bool", "bool"): _same,
    ("date", "date"): _same,
    ("text", "text"): _text,
    ("int", "int"): _int,
    ("int", "decimal"): _int_to_decimal,
    ("decimal", "int"): _decimal_to_int,
    ("decimal", "decimal"): _decimal,
    ("money", "decimal"): _money,
    ("money", "money"): _money,
    ("decimal", "money"): _never("{d} is locale-dependent on Postgres; use numeric(19,4)"),
    ("float", "float"): _float,
    ("timestamp", "timestamp"): _fraction(""),
    ("timestamptz", "timestamptz"): _fraction(" (the instant is kept, the offset is not)"),
    ("time", "time"): _fraction(""),
    ("timestamp", "timestamptz"): _mixed_tz,
    ("timestamptz", "timestamp"): _mixed_tz,
    ("timetz", "time"): _never("{s} has no SQL Server counterpart; use time"),
    ("bytes", "bytes"): _bytes,
    ("json", "text"): _json_to_text,
    ("text", "json"): _text_to_json,
    ("json", "json"): _same,
}
