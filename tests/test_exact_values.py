"""Every Postgres value arrives exactly as the source holds it (issue 11).

Compared by representation (`col::text` in pinned settings, see Rig.texts), with
the two databases in different TimeZone / DateStyle / IntervalStyle /
extra_float_digits settings, through a real bridge process. Each value sits in a
row of its own, so a failure names the column and the value.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from rigs import ITEMS, STAGED, TRANSPORTS, link, make_rig, unsettle
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine import catalog
from syncbridge.engine.config import ConfigError
from syncbridge.engine.reconcile import check
from syncbridge.engine.validate import shapes

TYPES = """
create type mood as enum ('sad', 'ok', 'happy');
create domain posint as integer check (value > 0);
create domain doc as jsonb;
create type pair as (x integer, y text);
create table v (
    id    integer primary key,
    n     numeric, n2 numeric(12,2), f4 real, f8 double precision,
    i2 smallint, i4 integer, i8 bigint, b boolean,
    t text, vc varchar(12), ch char(5), by bytea, j json, jb jsonb, u uuid,
    d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    ip inet, net cidr, mac macaddr, mny money, bt bit(4), vb varbit,
    ia integer[], ta text[], e mood, dm posint, dj doc, r int4range, nr numrange,
    mr int4multirange, co pair, tv tsvector
);
"""
# column -> SQL literals; NULL is tested by the update below
VALUES: dict[str, list[str]] = {
    "n": ["1.50", "1.5", "'NaN'", "'Infinity'", "'-Infinity'", "0.000000000000000000001",
          "-0.0", "123456789012345678901234567890.123456789"],
    "n2": ["1.5", "-0.00", "9999999999.99"],
    "f4": ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "'1.17549435e-38'", "'1e-45'",
           "'3.4028235e38'", "'0.1'"],
    "f8": ["'NaN'", "'-0'", "'5e-324'", "'1.7976931348623157e308'", "'0.1'",
           "'0.30000000000000004'", "'0.30000000000000002'"],
    "i2": ["-32768", "32767"], "i4": ["-2147483648"], "i8": ["-9223372036854775808"],
    "b": ["true", "false"],
    "t": ["''", "'trailing  '", "U&'\\00E9'", "U&'e\\0301'", "'😀 𝄞 李 \U0010ffff'",
          "E'back\\\\slash \"q\" ''s'' \\n\\t\\x01'"],
    "vc": ["''", "'a '", "'twelve chars'"],
    "ch": ["'ab'", "'ab   '", "''", "'abcde'"],
    "by": ["'\\x'", "'\\x00ff'", "'\\x5c27'"],
    "j": ["'null'", "'{\"b\":1,  \"a\":2, \"a\":3}'", "'1.0'", "'  [1, 2 ]  '", "'\"str\"'",
          "'{\"k\": null}'"],
    "jb": ["'null'", "'{\"b\":1,\"a\":2}'", "'1.0'", "'1.00'", "'{\"k\": null}'",
           "'\"null\"'", "'[]'"],
    "u": ["'6F1C0A52-8D0E-4A55-B7D6-2D9E9C1B0001'"],
    "d": ["'infinity'", "'-infinity'", "'4713-01-01 BC'", "'2024-02-29'", "'5874897-12-31'"],
    "tm": ["'24:00:00'", "'00:00:00.000001'"],
    "ttz": ["'23:59:59.999999+14:59'", "'00:00:00-15:59'", "'12:00:00+05:45'"],
    "ts": ["'infinity'", "'0044-03-15 12:00:00 BC'", "'2024-02-29 23:59:59.999999'",
           "'294276-12-31 23:59:59.999999'"],
    "tstz": ["'-infinity'", "'2024-05-01 10:00:00.123456+05:45'", "'1900-01-01 00:00:00+00'",
             "'0044-03-15 12:00:00+00 BC'"],
    "iv": ["'30 days'", "'1 mon'", "'1 mon -30 days'", "'-1 year 2 mons 3 days 04:05:06.789'",
           "'0'", "'1 day 25:00:00'", "'-0.000001 seconds'"],
    "ip": ["'10.0.0.1'", "'10.0.0.1/8'", "'::1'", "'fe80::1/64'"],
    "net": ["'10.0.0.0/8'", "'2001:db8::/32'"],
    "mac": ["'08:00:2b:01:02:03'"],
    "mny": ["1234.56", "-0.01", "'92233720368547758.07'"],
    "bt": ["B'1010'"], "vb": ["B''", "B'1'", "B'0000000001'"],
    "ia": ["'{1,NULL,3}'", "'{{1,2},{3,4}}'", "'{}'", "'[0:1]={7,8}'"],
    "ta": ["'{\"a b\",NULL,\"NULL\",\"\"}'", "'{{\"é\"},{\"}\"}}'"],
    "e": ["'sad'", "'happy'"], "dm": ["5"], "dj": ["'null'", "'{\"z\": [1.10]}'"],
    "r": ["'[1,5)'", "'empty'", "'(,)'"], "nr": ["'[1.50,2.0]'"],
    "mr": ["'{[1,3), [5,7)}'", "'{}'"],
    "co": ["'(1,\"a b\")'", "'(,)'", "'(,\"\")'"],
    "tv": ["'a fat cat:3A rat:1,2'"],
}  # no xml: the embedded server is built without libxml
# update each column to a value its type's `=` calls equal to one above, spelled apart
EQUAL_BUT_SPELLED_APART = {
    "n": ("1.5", "1.50"), "n2": ("1.5", "1.500"), "iv": ("'30 days'", "'1 mon'"),
    "jb": ("'1.0'", "'1.000'"), "j": ("'1.0'", "'1.00'"), "f8": ("'-0'", "'0'"),
    "f4": ("'-0'", "'0'"), "t": ("U&'\\00E9'", "U&'e\\0301'"), "vc": ("'a '", "'a'"),
    "mny": ("-0.01", "'-$0.01'"), "r": ("'[1,5)'", "'[1,4]'"),
    "ip": ("'10.0.0.1/8'", "'10.0.0.1/16'"),
}
SETTINGS = {  # the two databases disagree on every setting that changes how values print
    "a": {"timezone": "Asia/Kathmandu", "datestyle": "SQL, DMY", "intervalstyle": "sql_standard",
          "extra_float_digits": "-3", "bytea_output": "escape"},
    "b": {"timezone": "America/St_Johns", "datestyle": "German", "intervalstyle": "iso_8601",
          "extra_float_digits": "0", "lc_monetary": "C.utf8"},
}


def _rows() -> list[tuple[int, str, str]]:
    rows, i = [], 1
    for col, literals in VALUES.items():
        for lit in literals:
            rows.append((i, col, lit))
            i += 1
    return rows


def _write(rig, side: str, statements: list[str]) -> None:
    with psycopg.connect(rig.dsn[side], autocommit=True) as c:
        for s in statements:
            c.execute(s)


@pytest.fixture(params=[("a_to_b", ITEMS), ("a_to_b", STAGED), ("both", None)],
                ids=["a_to_b", "a_to_b-staged", "both"])
def rig(request, new_db, tmp_path):
    direction, env = request.param
    r = make_rig(new_db, tmp_path, TYPES, [link("v", "v", ["id"], direction)])
    unsettle(r, SETTINGS)
    r.start_bridge(env)
    yield r
    r.close()


def _converged(rig, what: str, timeout: float = 60) -> None:
    try:
        wait_until(lambda: rig.equal("v", ["id"]), timeout, what)
    except TimeoutError:
        a = {r[0]: r for r in rig.texts("a", "v", ["id"])}
        b = {r[0]: r for r in rig.texts("b", "v", ["id"])}
        cols = ["id", *VALUES]
        diff = {k: [(c, x, y) for c, x, y in zip(cols, a.get(k, ()), b.get(k, ()), strict=False)
                    if x != y] or "missing" for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        raise AssertionError(f"{what}: rows differ {diff}\n{rig.log_text()[-3000:]}") from None


def test_every_value_arrives_exactly(rig):
    rows = _rows()
    _write(rig, "a", [f"insert into v (id, {col}) values ({i}, {lit})" for i, col, lit in rows])
    _write(rig, "a", ["insert into v (id, t) values (100000, repeat('é', 500000) || 'x')"])
    _converged(rig, "every value to arrive")
    texts = {r[0]: r for r in rig.texts("b", "v", ["id"])}
    assert texts["1"][1] == "1.50" and texts["2"][1] == "1.5"  # numeric scale kept
    jnull = [i for i, col, lit in rows if col == "jb" and lit == "'null'"][0]
    got = rig.query("b", "select jb is null, jb::text from v where id = %s", (jnull,))
    assert got == [(False, "null")]  # JSON null is not SQL NULL

    # the other side's writes, for a two-way link; else more source writes
    side = "b" if rig.config.links["v"].direction == "both" else "a"
    updates = []
    for col, (first, _second) in EQUAL_BUT_SPELLED_APART.items():
        i = 200000 + len(updates)
        updates.append(f"insert into v (id, {col}) values ({i}, {first})")
    _write(rig, side, updates)
    _converged(rig, "the inserts of = -equal values")
    _write(rig, side, [f"update v set {col} = {second} where {col} is not null and id >= 200000"
                       for col, (_first, second) in EQUAL_BUT_SPELLED_APART.items()])
    _converged(rig, "updates that = calls no change")
    sink = {r[0]: r for r in rig.texts("a" if side == "b" else "b", "v", ["id"])}
    cols = ["id", *VALUES]
    assert sink["200000"][cols.index("n")] == "1.50"
    assert sink["200002"][cols.index("iv")] == "1 mon"

    # to NULL and back
    cols = list(VALUES)
    _write(rig, side, ["update v set " + ", ".join(f"{c} = null" for c in cols)
                       + " where id < 1000"])
    _converged(rig, "every column set to NULL")
    _write(rig, side, [f"update v set {col} = {lit} where id = {i}" for i, col, lit in rows])
    _converged(rig, "every value written again")
    # staged batches arrived staged, not by falling back to the item path, and item
    # batches as one sink statement (sync.apply_batch spells every type's shape as the
    # bridge does)
    assert "event=staged_batch_isolating" not in rig.log_text()
    assert "event=one_shot_shape_mismatch" not in rig.log_text()


def test_check_sees_every_difference_and_invents_none(rig):
    rows = _rows()
    _write(rig, "a", [f"insert into v (id, {col}) values ({i}, {lit})" for i, col, lit in rows])
    _converged(rig, "every value to arrive")
    rig.stop_bridge()
    [res] = _check(rig)
    assert (res.verdict, res.diffs) == ("equal", [])

    seeded = {  # (column, a literal, b literal), written around the bridge
        "n": ("1.5", "1.50"), "iv": ("'30 days'", "'1 mon'"), "jb": ("'null'", "null"),
        "f8": ("'-0'", "'0'"), "vc": ("'a '", "'a'"), "t": ("U&'\\00E9'", "U&'e\\0301'"),
        "j": ("'{\"a\":1,\"b\":2}'", "'{\"b\":2,\"a\":1}'"), "ch": ("'ab'", "'ab '"),
    }
    expect = {}
    for n, (col, (va, vb)) in enumerate(seeded.items()):
        key = 300000 + n
        _quiet(rig, "a", f"insert into v (id, {col}) values ({key}, {va})")
        _quiet(rig, "b", f"insert into v (id, {col}) values ({key}, {vb})")
        if col != "ch":  # char(5) pads: 'ab' and 'ab ' are the same value
            expect[key] = [col]
    [res] = _check(rig)
    found = {d.key_a["id"]: d.columns for d in res.diffs}
    assert res.verdict == "different"
    assert found == expect


def _quiet(rig, side: str, statement: str) -> None:
    """Write as the bridge would (capture does not signal it): drift for check to find."""
    other = "b" if side == "a" else "a"
    with psycopg.connect(rig.dsn[side], autocommit=True) as c, c.transaction():
        c.execute("select set_config('syncbridge.origin', %s, true)", (f"v:{other}",))
        c.execute(statement)


def _check(rig):
    config = rig.config
    return asyncio.run(check.check_all(config, shapes(config, ["v"]), [], settle=2.0))


@pytest.mark.parametrize(("ta", "tb", "why"), [
    ("json", "jsonb", "json keeps its text (key order, duplicate keys, spacing) and jsonb "
                      "does not: link json to json and jsonb to jsonb"),
    ("numeric(12,2)", "numeric(12,3)", "scale 2 becomes scale 3 (1.5 would read back as a "
                                       "different text)"),
    ("integer", "numeric(12,2)", "an integer would gain 2 decimal places in numeric(12,2)"),
    ("numeric", "numeric(12,2)", "unconstrained numeric does not fit numeric(12,2)"),
    ("text", "character(5)", "text values cannot be stored as character(5) with the same text"),
])
def test_a_pair_that_cannot_carry_values_exactly_is_refused(new_db, tmp_path, ta, tb, why):
    rig = make_rig(new_db, tmp_path, f"create table p (id int primary key, c {ta})", [],
                   schema_b=f"create table p (id int primary key, c {tb})")
    rig.config_path.write_text(rig.config_path.read_text() + (
        '\n[[links]]\nname = "p"\na = { peer = "a", table = "p" }\n'
        'b = { peer = "b", table = "p" }\nkey = ["id"]\ndirection = "a_to_b"\n'))
    with pytest.raises(ConfigError) as e:
        shapes(rig.config)
    assert str(e.value) == (f"link 'p': column c ({ta}) on peer 'a' and column c ({tb}) on "
                            f"peer 'b' have incompatible types: {why}")


def test_a_json_column_flows(new_db, tmp_path):
    """json (not jsonb) used to stop the link: the guard needed json = json."""
    rig = make_rig(new_db, tmp_path, "create table p (id int primary key, j json)",
                   [link("p", "p", ["id"], "a_to_b")])
    rig.start_bridge()
    try:
        rig.execute("a", "insert into p values (1, '{\"b\": 1, \"a\": 1}'), (2, 'null')")
        wait_until(lambda: rig.equal("p", ["id"]), 30, "json rows")
        rig.execute("a", "update p set j = '{\"a\": 1, \"b\": 1}' where id = 1")
        wait_until(lambda: rig.query("b", "select j::text from p where id = 1")
                   == [('{"a": 1, "b": 1}',)], 30, "a json rewrite that jsonb would call equal")
    finally:
        rig.close()


@pytest.mark.parametrize("direction, env", [("a_to_b", ITEMS), ("a_to_b", STAGED),
                                            ("both", None)], ids=["a_to_b", "staged", "both"])
def test_a_key_that_equals_but_reads_differently_is_carried(new_db, tmp_path, direction, env):
    """1.5 -> 1.50 and a citext case change are the same key to `=`, not the same value.
    The staged path sees both signals of the changed key in one batch: they name one
    row, so its upsert must take that row once."""
    schema = ("create extension if not exists citext; "
              "create table kn (id numeric primary key, v text); "
              "create table kc (email citext primary key, v text);")
    rig = make_rig(new_db, tmp_path, schema, [link("kn", "kn", ["id"], direction),
                                              link("kc", "kc", ["email"], direction)])
    rig.start_bridge(env)
    try:
        rig.execute("a", "insert into kn values (1.5, 'x'), (0.12345678901234567890123, 'y')")
        rig.execute("a", "insert into kc values ('ann@x.org', 'x')")
        rig.wait_equal({"kn": ["id"], "kc": ["email"]})
        rig.execute("a", "update kn set id = 1.50 where id = 1.5")
        rig.execute("a", "update kc set email = 'Ann@X.org' where email = 'ann@x.org'")
        wait_until(lambda: rig.query("b", "select id::text from kn order by id")
                   == [("0.12345678901234567890123",), ("1.50",)], 30, "the key's new text")
        wait_until(lambda: rig.query("b", "select email::text from kc") == [("Ann@X.org",)],
                   30, "the citext key's case")
        if direction == "both":
            rig.execute("b", "update kn set v = 'b-edit' where id = 1.5")
            rig.execute("b", "update kc set v = 'b-edit'")
            wait_until(lambda: rig.query("a", "select v from kn where id = 1.5") == [("b-edit",)]
                       and rig.query("a", "select v from kc") == [("b-edit",)], 30,
                       "b's edits after the key change")
            assert rig.query("a", "select count(*) from sync.conflicts") == [(0,)]
    finally:
        rig.close()


@pytest.mark.parametrize("env", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_not_null_domains_and_sink_only_columns_with_defaults(new_db, tmp_path, env):
    """A deleted row travels as its key alone: its NOT NULL domain column is NULL on
    the way (the staged path stages a domain as its base type, checked on insert)."""
    doms = ("create domain doc_nn as jsonb not null check (jsonb_typeof(value) = 'object'); "
            "create domain nn_text as text not null;")
    rig = make_rig(new_db, tmp_path, doms + "create table d (id int primary key, j doc_nn);",
                   [link("d", "d", ["id"], "a_to_b")],
                   schema_b=doms + "create table d (id int primary key, j doc_nn, "
                                   "x nn_text default 'z');")
    rig.start_bridge(env)
    try:
        rig.execute("a", "insert into d values (1, '{\"a\": null}'), (2, '{}')")
        wait_until(lambda: rig.query("b", "select j::text, x from d order by id")
                   == [('{"a": null}', "z"), ("{}", "z")], 30, "the rows with a NOT NULL domain")
        rig.execute("a", "delete from d where id = 2")
        wait_until(lambda: rig.query("b", "select id from d") == [(1,)], 30, "the delete")
        assert rig.query("a", "select count(*) from sync.dead_letter") == [(0,)]
        assert "event=staged_batch_isolating" not in rig.log_text()
    finally:
        rig.close()


def test_a_user_type_defined_differently_on_each_side_is_refused(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, "create domain amt as numeric(10,2); "
                   "create table p (id int primary key, c amt)", [],
                   schema_b="create domain amt as numeric(10,3); "
                            "create table p (id int primary key, c amt)")
    rig.config_path.write_text(rig.config_path.read_text() + (
        '\n[[links]]\nname = "p"\na = { peer = "a", table = "p" }\n'
        'b = { peer = "b", table = "p" }\nkey = ["id"]\ndirection = "a_to_b"\n'))
    with pytest.raises(ConfigError) as e:
        shapes(rig.config)
    assert str(e.value) == (
        "link 'p': column c on peer 'a' and column c on peer 'b' have type public.amt, defined "
        "differently: numeric(10,2) on 'a', numeric(10,3) on 'b'; values would not read back "
        "alike")


@pytest.mark.parametrize(("src", "dst"), [
    ("timestamp(3) without time zone", "timestamp without time zone"),
    ("time(3) without time zone", "time(6) without time zone"),
    ("numeric(10,2)", "numeric(12,2)"), ("integer", "numeric(12,0)"), ("real", "double precision"),
    ("character varying(5)", "text"), ("smallint[]", "bigint[]"),
])
def test_pairs_that_keep_the_text_are_accepted(src, dst):
    assert catalog.why_not(src, dst) is None
