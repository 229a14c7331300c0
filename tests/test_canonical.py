"""The canonical row text: Postgres expressions agree with the Python reference,
and the SQL Server rendering parses as T-SQL."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import psycopg
import pytest
import sqlglot

from syncbridge.engine.reconcile import canonical

# (Postgres type, literal, expected canonical text) — the expected text is also
# what the T-SQL rendering produces for the SQL Server type noted in the comment.
SAMPLES = [
    ("text", "'Zoë 李 ✓ \t ''q'''", "Zoë 李 ✓ \t 'q'"),          # nvarchar: as is
    ("text", "''", ""),                                          # '' is not NULL
    ("varchar(10)", "'a\x1eb'", "a\x1eb"),                      # separator inside a value
    ("integer", "-42", "-42"),                                   # int: CONVERT(varchar)
    ("bigint", "-9223372036854775808", "-9223372036854775808"),
    ("numeric(12,2)", "1.50", "1.5"),                            # decimal: zeros trimmed
    ("numeric", "100", "100"),
    ("numeric", "0.000", "0"),
    ("numeric", "-0.0100", "-0.01"),
    ("double precision", "0.1", "0.1"),                          # float: FORMAT G15
    ("double precision", "2.718281828459045", "2.71828182845905"),
    ("real", "3.1415927", "3.14159"),                            # real: FORMAT G6
    ("boolean", "true", "t"),                                    # bit 1 -> 't'
    ("boolean", "false", "f"),
    ("date", "'2024-02-29'", "2024-02-29"),                      # CONVERT(.., 23)
    ("date", "'0001-01-01'", "0001-01-01"),
    ("time", "'23:59:59.000001'", "23:59:59.000001"),            # time(6)
    ("time", "'07:00'", "07:00:00.000000"),
    ("timestamp", "'2024-02-29 23:59:59.999999'", "2024-02-29 23:59:59.999999"),  # style 121
    ("timestamptz", "'2024-05-01 10:00:00.123456+02'", "2024-05-01 08:00:00.123456Z"),
    ("timestamptz", "'2024-05-01 03:00:00.123456-05'", "2024-05-01 08:00:00.123456Z"),
    ("uuid", "'6F1C0A52-8D0E-4A55-B7D6-2D9E9C1B0001'", "6f1c0a52-8d0e-4a55-b7d6-2d9e9c1b0001"),
    ("bytea", "'\\x00ff10'", "00ff10"),                          # CONVERT(.., 2), lower
    ("jsonb", "'{\"b\": [1, 2.50, null], \"a\": {\"ü\": \"x\\n\"}, \"aa\": true}'",
     '{"a": {"ü": "x\\n"}, "b": [1, 2.50, null], "aa": true}'),
    ("json", "'{\"zz\": 1,   \"a\": \"\\u00e9\"}'", '{"a": "é", "zz": 1}'),
]


@pytest.fixture(scope="module")
def conn(pg_server):
    name = f"t_canon_{uuid.uuid4().hex[:8]}"
    dsn = pg_server.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("set timezone = 'Pacific/Chatham'")  # +12:45: a UTC bug would show
        c.execute("set extra_float_digits = 3")
        yield c
    pg_server.drop_database(name)


@pytest.mark.parametrize(("pg_type", "literal", "expected"), SAMPLES)
def test_postgres_expression_matches_reference(conn, pg_type, literal, expected):
    cls = canonical.type_class(conn.execute(f"select format_type('{pg_type}'::regtype, null)")
                               .fetchone()[0])
    value_sql = f"({literal})::{pg_type}"
    raw = "v::text" if cls == "json" else "v"  # psycopg would parse 2.50 into a float
    text, value = conn.execute(
        f"select {canonical.pg_text('v', cls)}, {raw} from (select {value_sql} as v) s"
    ).fetchone()
    assert text == expected
    assert canonical.py_text(value, cls) == expected  # the Python reference agrees


def test_null_empty_and_separator_fields_are_distinct(conn):
    fields = [("x", "text"), ("y", "text")]
    row = canonical.pg_row(fields)
    texts = [conn.execute(f"select {row} from (select {a}::text as x, {b}::text as y) s")
             .fetchone()[0] for a, b in (("null", "''"), ("''", "null"), ("'a'", "'b'"),
                                         ("'a' || chr(30) || '1:b'", "null"))]
    assert len(set(texts)) == 4
    assert texts[0] == "N\x1e0:"
    assert canonical.py_row([None, ""], ["text", "text"]) == texts[0]
    assert canonical.py_row(["a", "b"], ["text", "text"]) == texts[2]


def test_empty_bytes_and_json_strings_with_separators_stay_distinct(conn):
    fields = [("x", "bytes"), ("y", "json")]
    row = canonical.pg_row(fields)
    rows = [("null", "null"), ("''::bytea", "null"), ("null", "'\"\"'"),
            ("null", "'\"a\\u001e\"'")]
    texts = [conn.execute(f"select {row} from (select {a}::bytea as x, {b}::jsonb as y) s")
             .fetchone()[0] for a, b in rows]
    assert len(set(texts)) == 4
    assert texts[1] == ":\x1eN"
    assert all(t.count("\x1e") == 1 for t in texts), "JSON escapes the separator"
    assert canonical.py_row([b"", None], ["bytes", "json"]) == texts[1]


def test_row_hash_is_the_big_endian_md5_prefix(conn):
    h = conn.execute(f"select {canonical.pg_row_hash64(chr(39) + 'abc' + chr(39))}").fetchone()[0]
    import hashlib
    assert h == int.from_bytes(hashlib.md5(b"abc").digest()[:8], "big", signed=True)


def test_pair_class_takes_the_wider_type():
    assert canonical.pair_class("integer", "numeric(12,2)") == "numeric"
    assert canonical.pair_class("real", "double precision") == "float4"
    assert canonical.pair_class("timestamp with time zone", "datetimeoffset(7)") == "timestamptz"
    assert canonical.pair_class("uuid", "uniqueidentifier") == "uuid"
    assert canonical.pair_class("bytea", "varbinary(max)") == "bytes"
    assert canonical.pair_class("integer[]", "integer[]") == "other"


def test_python_reference_on_python_values():
    tz = dt.timezone(dt.timedelta(hours=-3))
    assert canonical.py_text(dt.datetime(2024, 1, 1, 21, 0, 0, 5, tzinfo=tz),
                             "timestamptz") == "2024-01-02 00:00:00.000005Z"
    assert canonical.py_text(Decimal("1E+2"), "numeric") == "100"
    assert canonical.py_text({"b": 1, "a": [Decimal("2.50")]}, "json") == '{"a": [2.50], "b": 1}'
    assert canonical.py_text(b"\x00\xff", "bytes") == "00ff"
    assert canonical.py_text(None, "text") is None


def test_tsql_checksum_parses_and_spells_every_type():
    cols = [("id", "int"), ("code", "text"), ("amount", "numeric"), ("ratio", "float"),
            ("flag", "bool"), ("d", "date"), ("t", "time"), ("ts", "timestamp"),
            ("tstz", "timestamptz"), ("u", "uuid"), ("blob", "bytes"), ("doc", "json")]
    for lower, upper in ((False, False), (True, False), (False, True), (True, True)):
        stmt = canonical.tsql_chunk_checksum("dbo", "things", cols, ["id", "code"], lower, upper)
        [tree] = sqlglot.parse(stmt, read="tsql")
        assert tree is not None
        # (id, code) > (?, ?) is spelled (id > ?) or (id = ? and code > ?): 3 per bound
        assert stmt.count("?") == 3 * (lower + upper)
    stmt = canonical.tsql_chunk_checksum("dbo", "things", cols, ["id"], True, True)
    assert "HASHBYTES('MD5'" in stmt and canonical.UTF8 in stmt
    assert "SWITCHOFFSET([tstz], '+00:00')" in stmt
    assert "LOWER(CONVERT(varchar(max), [blob], 2))" in stmt
    for col, cls in cols:  # every named type is rendered with its own expression
        assert canonical.tsql_field(f"[{col}]", cls) in stmt, (col, cls)
    assert "([id] > ?)" in stmt and "([id] <= ?)" in stmt
