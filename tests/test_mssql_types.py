"""The Postgres <-> SQL Server type mapping (both directions, refusals with their
reasons) and the values that travel between them."""

from __future__ import annotations

import datetime as dt
import json
import struct
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mssql_shape import COLUMNS, link, mssql_table, pg_table, shape

from syncbridge.engine import catalog
from syncbridge.engine.config import ConfigError
from syncbridge.engine.sqlserver import convert
from syncbridge.engine.sqlserver import types as T

PG, MS = "postgres", "sqlserver"


@pytest.mark.parametrize(("pg", "ms"), [(pg, ms) for _, pg, ms in COLUMNS])
def test_every_listed_pair_is_exact_both_ways(pg: str, ms: str) -> None:
    assert T.explain(PG, pg, MS, ms) is None
    assert T.explain(MS, ms, PG, pg) is None


# (source dialect, source type, sink dialect, sink type)
ACCEPTED = [
    (PG, "character varying(20)", MS, "nvarchar(40)"),
    (PG, "text", MS, "nvarchar(max)"),
    (MS, "nvarchar(20)", PG, "character varying(20)"),
    (MS, "varchar(30)", PG, "text"),
    (MS, "nvarchar(max)", PG, "jsonb"),
    (MS, "nvarchar(max)", PG, "json"),
    (PG, "json", MS, "nvarchar(max)"),
    (MS, "tinyint", PG, "smallint"),
    (PG, "smallint", MS, "int"),
    (PG, "integer", MS, "bigint"),
    (PG, "integer", MS, "decimal(10,0)"),
    (PG, "bigint", MS, "decimal(19,0)"),
    (PG, "numeric(10,2)", MS, "decimal(12,4)"),
    (MS, "decimal(38,10)", PG, "numeric"),
    (MS, "decimal(4,0)", PG, "smallint"),
    (PG, "real", MS, "float"),
    (PG, "timestamp without time zone", MS, "datetime2(7)"),
    (PG, "timestamp(3) without time zone", MS, "datetime2(3)"),
    (MS, "datetime2(3)", PG, "timestamp without time zone"),
    (MS, "datetime", PG, "timestamp without time zone"),
    (MS, "smalldatetime", PG, "timestamp(0) without time zone"),
    (PG, "timestamp with time zone", MS, "datetimeoffset(7)"),
    (MS, "datetimeoffset(3)", PG, "timestamp with time zone"),
    (PG, "time without time zone", MS, "time(7)"),
    (MS, "time(0)", PG, "time without time zone"),
    (MS, "varbinary(16)", PG, "bytea"),
    (MS, "money", PG, "numeric(19,4)"),
    (PG, "uuid", MS, "uniqueidentifier"),
    (PG, "boolean", MS, "bit"),
    (PG, "date", MS, "date"),
]


@pytest.mark.parametrize(("sd", "st_", "dd", "dt_"), ACCEPTED)
def test_accepted(sd: str, st_: str, dd: str, dt_: str) -> None:
    assert T.explain(sd, st_, dd, dt_) is None
    assert T.compatible(sd, st_, dd, dt_)


# (source dialect, source type, sink dialect, sink type, words the reason must contain)
REFUSED = [
    (PG, "timestamp", MS, "datetime2(3)", "datetime2(3) cannot hold microseconds from timestamp"),
    (PG, "timestamp without time zone", MS, "datetime2(5)", "cannot hold microseconds"),
    (MS, "datetime2(7)", PG, "timestamp without time zone", "100-nanosecond ticks"),
    (MS, "datetime2", PG, "timestamp without time zone", "100-nanosecond ticks"),
    (PG, "timestamp without time zone", MS, "datetime", "use datetime2(6)"),
    (MS, "datetimeoffset(7)", PG, "timestamp with time zone", "100-nanosecond"),
    (PG, "timestamp with time zone", MS, "datetime2(7)", "has no time zone"),
    (MS, "datetimeoffset(6)", PG, "timestamp without time zone", "has no time zone"),
    (PG, "timestamp without time zone", MS, "datetimeoffset(6)", "invent an offset"),
    (MS, "time(7)", PG, "time without time zone", "100-nanosecond"),
    (PG, "time with time zone", MS, "time(7)", "no SQL Server counterpart"),
    (PG, "text", MS, "varchar(max)", "not Unicode"),
    (PG, "text", MS, "char(10)", "not Unicode"),
    (PG, "text", MS, "nvarchar(4000)", "narrower"),
    (PG, "character varying(50)", MS, "nvarchar(80)", "100 UTF-16 code units"),
    (MS, "nvarchar(40)", PG, "character varying(20)", "narrower"),
    (PG, "character varying(10)", MS, "nchar(20)", "pad differently"),
    (PG, "numeric", MS, "decimal(38,10)", "without precision"),
    (PG, "numeric(20,4)", MS, "decimal(18,4)", "integer digits"),
    (PG, "numeric(10,4)", MS, "decimal(12,2)", "keeps 2 decimal places"),
    (MS, "decimal(19,0)", PG, "bigint", "cannot hold every value"),
    (PG, "bigint", MS, "int", "cannot hold every value"),
    (PG, "smallint", MS, "tinyint", "cannot hold every value"),
    (PG, "bigint", MS, "decimal(18,0)", "needs 19"),
    (PG, "double precision", MS, "real", "4-byte float"),
    (MS, "float", PG, "real", "4-byte float"),
    (PG, "bytea", MS, "varbinary(100)", "use varbinary(max)"),
    (PG, "bytea", MS, "binary(16)", "fixed length"),
    (PG, "jsonb", MS, "nvarchar(4000)", "needs nvarchar(max)"),
    (PG, "money", MS, "decimal(19,4)", "locale-dependent"),
    (PG, "uuid", MS, "nvarchar(36)", "different kinds"),
    (PG, "integer", MS, "rowversion", "read-only"),
    (PG, "integer[]", MS, "nvarchar(max)", "not a type syncbridge can carry"),
    (PG, "integer", MS, "geography", "not a type syncbridge can write"),
]


@pytest.mark.parametrize(("sd", "st_", "dd", "dt_", "words"), REFUSED)
def test_refused_with_reason(sd: str, st_: str, dd: str, dt_: str, words: str) -> None:
    reason = T.explain(sd, st_, dd, dt_)
    assert reason is not None and words in reason, reason
    assert not T.compatible(sd, st_, dd, dt_)


def test_postgres_to_postgres_delegates_to_catalog() -> None:
    assert T.compatible(PG, "integer", PG, "bigint")
    assert not T.compatible(PG, "bigint", PG, "integer")


def test_type_checker_drives_catalog_shape_in_both_directions() -> None:
    s = shape()
    assert [a for a, _ in s.pairs][:2] == ["id", "k2"]
    # sides swapped (SQL Server as a): the checker still tells the dialects apart
    check = T.type_checker("sqlserver", "postgres")
    assert check("datetime2(6)", "timestamp without time zone")
    assert check("timestamp without time zone", "datetime2(6)")
    assert not check("datetime2(7)", "timestamp without time zone")
    assert check("timestamp without time zone", "datetime2(7)")
    assert check("bigint", "bigint") and check("date", "date")


def test_shape_refuses_a_lossy_column() -> None:
    b = mssql_table()
    cols = dict(b.columns)
    cols["seen_at"] = catalog.Column("seen_at", "datetime2(3)", True)
    with pytest.raises(ConfigError, match="seen_at"):
        catalog.shape(link(), pg_table(), catalog.Table("dbo", b.name, cols, b.pk),
                      check_types=T.type_checker("postgres", "sqlserver"))


# --- values Postgres -> OPENJSON ----------------------------------------------------------


def test_decimals_and_integers_travel_as_exact_strings() -> None:
    assert convert.to_transport(Decimal("12345678901234.5678"),
                                "decimal(18,4)") == "12345678901234.5678"
    assert convert.to_transport(Decimal("1E+3"), "decimal(18,4)") == "1000"
    assert convert.to_transport(Decimal("-0.0001"), "decimal(18,4)") == "-0.0001"
    assert convert.to_transport(2**63 - 1, "bigint") == "9223372036854775807"
    assert convert.to_transport(True, "bit") == 1 and convert.to_transport(False, "bit") == 0
    for bad in (Decimal("NaN"), Decimal("Infinity"), float("nan"), float("inf")):
        with pytest.raises(ValueError):
            convert.to_transport(bad, "float")


def test_times_keep_microseconds_and_offsets() -> None:
    naive = dt.datetime(2024, 5, 1, 10, 0, 0, 123456)
    assert convert.to_transport(naive, "datetime2(6)") == "2024-05-01T10:00:00.123456"
    assert convert.to_transport(naive.replace(microsecond=0), "datetime2(6)") == \
        "2024-05-01T10:00:00.000000"
    aware = dt.datetime(2024, 5, 1, 10, 0, 0, 123456, dt.UTC)
    assert convert.to_transport(aware, "datetimeoffset(6)") == "2024-05-01T10:00:00.123456+00:00"
    plus2 = aware.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert convert.to_transport(plus2, "datetimeoffset(6)") == "2024-05-01T12:00:00.123456+02:00"
    assert convert.to_transport(dt.time(23, 59, 59, 5), "time(6)") == "23:59:59.000005"
    assert convert.to_transport(dt.date(1, 1, 1), "date") == "0001-01-01"
    with pytest.raises(ValueError):
        convert.to_transport(naive, "datetimeoffset(6)")
    with pytest.raises(ValueError):
        convert.to_transport(aware, "datetime2(6)")
    with pytest.raises(ValueError):
        convert.to_transport(dt.datetime.max, "datetime2(6)")


def test_text_binary_uuid_json() -> None:
    text = "Zoë Ångström — 患者 😀"
    assert convert.to_transport(text, "nvarchar(max)") == text
    payload = json.dumps([{"c0": convert.to_transport(text, "nvarchar(max)")}], ensure_ascii=False)
    assert text in payload and json.loads(payload)[0]["c0"] == text
    assert convert.to_transport(b"\x00\xffAB", "varbinary(max)") == "00ff4142"
    assert convert.to_transport(memoryview(b"\x01"), "varbinary(max)") == "01"
    u = uuid.UUID("6f1d3c52-4f0e-4c59-9d59-3b8f5a1f3e11")
    assert convert.to_transport(u, "uniqueidentifier") == str(u)
    assert convert.to_transport('{"a": 1}', "nvarchar(max)") == '{"a": 1}'
    assert convert.to_transport({"b": [1, "é"]}, "nvarchar(max)") == '{"b":[1,"é"]}'
    assert convert.to_transport(None, "int") is None
    assert convert.to_transport(1.5, "float") == 1.5


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4,
                   min_value=Decimal("-99999999999999.9999"),
                   max_value=Decimal("99999999999999.9999")))
def test_decimal_strings_round_trip_exactly(d: Decimal) -> None:
    s = convert.to_transport(d, "decimal(18,4)")
    assert "E" not in s.upper() and Decimal(s) == d


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_through_json(f: float) -> None:
    assert json.loads(json.dumps(convert.to_transport(f, "float"))) == f


# --- values pyodbc -> Postgres ------------------------------------------------------------


def test_values_read_from_sql_server() -> None:
    u = convert.to_postgres("6F1D3C52-4F0E-4C59-9D59-3B8F5A1F3E11", "uniqueidentifier")
    assert u == uuid.UUID("6f1d3c52-4f0e-4c59-9d59-3b8f5a1f3e11")
    v = convert.to_postgres("2024-05-01 10:00:00.1234560 +02:00", "datetimeoffset(6)")
    assert v == dt.datetime(2024, 5, 1, 8, 0, 0, 123456, dt.UTC)
    assert v.utcoffset() == dt.timedelta(hours=2)
    neg = convert.parse_datetimeoffset("2024-05-01 10:00:00 -05:30")
    assert neg.utcoffset() == -dt.timedelta(hours=5, minutes=30)
    with pytest.raises(ValueError, match="100-nanosecond"):
        convert.parse_datetimeoffset("2024-05-01 10:00:00.1234567 +00:00")
    with pytest.raises(ValueError, match="NUL"):
        convert.to_postgres("a\x00b", "nvarchar(max)", "text")
    assert convert.to_postgres(Decimal("1.2300"), "decimal(18,4)") == Decimal("1.2300")
    assert convert.to_postgres(bytearray(b"\x01"), "varbinary(max)") == b"\x01"
    assert convert.to_postgres("2024-05-01", "date") == dt.date(2024, 5, 1)
    assert convert.to_postgres("10:00:00.1234560", "time(6)") == dt.time(10, 0, 0, 123456)
    assert convert.to_postgres('{"a":1}', "nvarchar(max)", "jsonb") == '{"a":1}'
    assert convert.to_postgres(None, "int") is None


def test_odbc_datetimeoffset_converter_layout() -> None:
    raw = struct.pack("<6hI2h", 2024, 5, 1, 10, 0, 0, 123456000, -5, -30)
    v = convert.datetimeoffset_from_odbc(raw)
    assert v.microsecond == 123456
    assert v.utcoffset() == -dt.timedelta(hours=5, minutes=30)
