"""Trying to break the staged (COPY) path of one-way Postgres links (engine/postgres/staged.py).

Every test runs a real bridge with every one-way batch staged (rigs.STAGED), the two
databases in different TimeZone / DateStyle / IntervalStyle, and compares the tables by
the text of every column. A test whose batches should all have gone staged also checks
the log for a fallback to the item path (`event=staged_batch_isolating`).
"""

from __future__ import annotations

import psycopg
import pytest

from rigs import STAGED, TRANSPORTS, link, make_rig, unsettle
from syncbridge.bridge.bench.rig import wait_until

ISOLATING = "event=staged_batch_isolating"
N = 150  # distinct keys per statement: a batch the staged path takes even at STAGE_FROM=100
SETTINGS = {
    "a": {"timezone": "Asia/Kathmandu", "datestyle": "SQL, DMY", "intervalstyle": "sql_standard",
          "extra_float_digits": "-3", "bytea_output": "escape"},
    "b": {"timezone": "America/St_Johns", "datestyle": "German", "intervalstyle": "iso_8601",
          "extra_float_digits": "0"},
}


def _write(rig, side: str, statements: list[str]) -> None:
    """The statements in one transaction: their keys travel as one batch."""
    with psycopg.connect(rig.dsn[side]) as c:
        for s in statements:
            c.execute(s)


def _rig(new_db, tmp_path, schema: str, links: list[dict], schema_b: str | None = None,
         env: dict[str, str] = STAGED):
    rig = make_rig(new_db, tmp_path, schema, links, schema_b=schema_b)
    unsettle(rig, SETTINGS)
    rig.start_bridge(env)
    return rig


def _equal(rig, tables: dict[str, list[str]], what: str, timeout: float = 60) -> None:
    for table, key in tables.items():
        try:
            wait_until(lambda t=table, k=key: rig.equal(t, k), timeout, f"{what}: {table}")
        except TimeoutError:
            a, b = rig.texts("a", table, key), rig.texts("b", table, key)
            diff = sorted(set(a) ^ set(b))[:10]
            raise AssertionError(f"{what}: {table} differs (a {len(a)} rows, b {len(b)} rows)"
                                 f" {diff}\n{rig.log_text()[-3000:]}") from None


def _settled(rig, table: str, key: list[str], what: str) -> None:
    """Once the queues are empty every batch is applied at the sink (its source commit comes
    after the sink's): the tables must be equal then, without waiting for them to become so."""
    rig.wait_drained()
    a, b = rig.texts("a", table, key), rig.texts("b", table, key)
    assert a == b, (f"{what}: {table} differs (a {len(a)} rows, b {len(b)} rows) "
                    f"{sorted(set(a) ^ set(b))[:6]}\n{rig.log_text()[-2000:]}")


def _drained(rig, what: str) -> None:
    rig.wait_drained()
    assert ISOLATING not in rig.log_text(), what


ODD = '"Odd ""Sch""ema"."Tab lé ""Q"""'  # schema Odd "Sch"ema, table Tab lé "Q"
NAMES = ('create schema "Odd ""Sch""ema"; '
         f'create table {ODD} ("Wert" text, "ID" int, "Näme" text collate "C", c0 text, '
         '"c1" int, "a""b" text, primary key ("Näme", "ID")); '
         'create table "UPPER" ("K" bigint primary key, "select" text, "from" int);')


@pytest.mark.parametrize("env", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_quoted_unicode_uppercase_names_and_a_composite_key_not_first(new_db, tmp_path, env):
    """Staged, and as items (each batch one sink statement, sync.apply_batch, naming the
    table as a regclass)."""
    t = ODD
    rig = _rig(new_db, tmp_path, NAMES, [
        link("odd", 'Odd "Sch"ema.Tab lé "Q"', ["Näme", "ID"], "a_to_b"),
        link("up", "UPPER", ["K"], "a_to_b")], env=env)
    try:
        tables = {'Odd "Sch"ema.Tab lé "Q"': ["Näme", "ID"], "UPPER": ["K"]}
        _write(rig, "a", [
            f"insert into {t} select 'w' || g, g % 7, 'n' || (g / 7), 'c0-' || g, g, E'x\\ty' "
            f"from generate_series(1, {N}) g",
            'insert into "UPPER" select g, \'s\' || g, g from generate_series(1, 150) g'])
        _equal(rig, tables, "inserts")
        _write(rig, "a", [
            f"update {t} set \"Wert\" = null, \"a\"\"b\" = '' where \"ID\" < 3",
            f"delete from {t} where \"ID\" = 3",
            f"update {t} set \"Näme\" = \"Näme\" || 'x' where \"ID\" = 4",  # a key change
            'update "UPPER" set "K" = "K" + 1000 where "K" % 2 = 0'])
        _equal(rig, tables, "updates, deletes and key changes")
        _drained(rig, "no row error here")
    finally:
        rig.close()


TEXTS = """
create table tx (id int primary key, t text, b bytea, big text, j jsonb, a text[]);
"""
# text values COPY must escape: tab, newline, CR, backslash, the literal \N, 'NULL', ''
AWKWARD = ["E'a\\tb'", "E'line1\\nline2'", "E'cr\\r'", "E'back\\\\slash'", "E'\\\\N'", "'\\N'",
           "'NULL'", "''", "null", "E'\\\\.'", "E'\\n\\\\.\\n'", "E'f\\t'", "E'\\nf\\tx'",
           "E'\\\\x00'", "' '", "E'\\x01\\x1f\\x7f'", "'é😀'"]


def test_text_that_copy_must_escape_bytea_of_every_byte_and_toasted_values(new_db, tmp_path):
    rig = _rig(new_db, tmp_path, TEXTS, [link("tx", "tx", ["id"], "a_to_b")])
    try:
        rows = [f"insert into tx (id, t, a) values ({i}, {v}, array[{v}, 'x'])"
                for i, v in enumerate(AWKWARD)]
        rows.append("insert into tx (id, b) select 1000, string_agg(set_byte('\\x00'::bytea, 0,"
                    " g), ''::bytea order by g) from generate_series(0, 255) g")
        rows.append("insert into tx (id, big, j) values (1001, repeat(E'ab\\tc\\n\\\\', 350000),"
                    " jsonb_build_object('k', E'\\t\\n\\\\N'))")
        rows.append(f"insert into tx (id, t) select g, E'\\\\N'"
                    f" from generate_series(2000, {2000 + N}) g")
        _write(rig, "a", rows)
        _equal(rig, {"tx": ["id"]}, "awkward texts")
        # the rows a second time, now as updates; then every value to NULL
        _write(rig, "a", ["update tx set t = t || E'\\t', big = big || 'z', b = b || '\\x5c'"])
        _equal(rig, {"tx": ["id"]}, "updates")
        _write(rig, "a", ["update tx set t = null, b = null, big = null, j = null, a = null"])
        _equal(rig, {"tx": ["id"]}, "to NULL")
        _drained(rig, "no row error here")
    finally:
        rig.close()


KEYS = """
create extension if not exists citext;
create table k_num (k numeric primary key, v text);
create table k_cit (k citext primary key, v text);
create table k_f8 (k float8 primary key, v text);
create table k_tz (k timestamptz primary key, v text);
create table k_uu (k uuid primary key, v text);
create table k_by (k bytea primary key, v text);
create table k_c (k text collate "C" primary key, v text);
create table k_iv (k interval primary key, v text);
"""
# no nondeterministic (ICU) collation: the embedded server is built without ICU
KEY_TABLES = ["k_num", "k_cit", "k_tz", "k_uu", "k_by", "k_c", "k_iv"]
KEY_OF = {  # a key expression of g for each table
    "k_num": "g * 1.10", "k_cit": "'Key' || g", "k_f8": "g / 3.0::float8",
    "k_tz": "timestamptz '2024-03-31 01:30:00+00' + g * interval '17 minutes'",
    "k_uu": "md5(g::text)::uuid", "k_by": "decode(md5(g::text), 'hex') || '\\x5c00'::bytea",
    "k_c": "E'k\\t' || g", "k_iv": "g * interval '1 day 1 hour'",
}
# a change of each key to one its type's `=` calls equal, spelled apart
RESPELL = {
    "k_num": "k = k * 1.00", "k_cit": "k = upper(k::text)", "k_f8": "k = k",
    "k_tz": "k = k", "k_uu": "k = k", "k_by": "k = k", "k_c": "k = k",
    "k_iv": "k = k - interval '1 hour' + interval '60 minutes'",
}


# keys whose text depends on how the writer's session prints them (SETTINGS a): a float8
# 1/3 under extra_float_digits = -3, and '-1 day -1 hour' under sql_standard (printed as
# '-1 1:00:00', where the leading sign applies to every field); each must still name its row
PRINTED_KEYS = {
    "float8-low-digits": ("float8", "g / 3.0", True),
    "float8-default": ("float8", "g / 3.0", False),
    "interval-sql_standard": ("interval", "- g * interval '1 day 1 hour'", True),
}


@pytest.mark.parametrize("env", TRANSPORTS.values(), ids=TRANSPORTS.keys())
@pytest.mark.parametrize("case", PRINTED_KEYS.values(), ids=PRINTED_KEYS.keys())
def test_a_key_printed_under_the_writers_settings_names_its_row(new_db, tmp_path, env, case):
    """Capture queues keys under pinned print settings (sql/postgres/capture.sql)."""
    key_type, key_of, unsettled = case
    rig = make_rig(new_db, tmp_path, f"create table kp (k {key_type} primary key, v text)",
                   [link("kp", "kp", ["k"], "a_to_b")])
    if unsettled:
        unsettle(rig, SETTINGS)
    rig.start_bridge(env)
    try:
        _write(rig, "a", [f"insert into kp select {key_of}, 'v' || g "
                          f"from generate_series(1, {N}) g"])
        _settled(rig, "kp", ["k"], f"{key_type} keys")
    finally:
        rig.close()


def test_key_types_respelled_deleted_and_reinserted_in_one_batch(new_db, tmp_path):
    rig = _rig(new_db, tmp_path, KEYS, [link(t, t, ["k"], "a_to_b") for t in KEY_TABLES])
    try:
        tables = {t: ["k"] for t in KEY_TABLES}
        _write(rig, "a", [f"insert into {t} select {KEY_OF[t]}, 'v' || g "
                          f"from generate_series(1, {N}) g" for t in KEY_TABLES])
        _equal(rig, tables, "inserts")
        # one batch per table: respell every key, delete some, re-insert them, update a value
        stmts = []
        for t in KEY_TABLES:
            stmts += [f"update {t} set {RESPELL[t]}, v = v || '-r'",
                      f"delete from {t} where v like 'v1%'",
                      f"insert into {t} select {KEY_OF[t]}, 'again' || g "
                      f"from generate_series(10, 19) g",
                      f"update {t} set v = v || '!' where v like 'again1%'"]
        _write(rig, "a", stmts)
        _equal(rig, tables, "respelled keys, deletes and re-inserts")
        _drained(rig, "no row error here")
    finally:
        rig.close()


SINK_EXTRAS_A = """
create type mood as enum ('sad', 'ok', 'happy');
create type pair as (x int, y text);
create domain posint as int not null check (value > 0);
create table s (id int primary key, u text, e mood, p pair, ai int[], d posint, n numeric(8,2));
"""
SINK_EXTRAS_B = """
create type mood as enum ('sad', 'ok', 'happy');
create type pair as (x int, y text);
create domain posint as int not null check (value > 0);
create table s (id int primary key, u text unique, e mood, p pair, ai int[], d posint,
                n numeric(8,2),
                extra text default 'dflt', ident bigint generated always as identity,
                gen text generated always as (u || '!') stored,
                touched int default 0);
create table audit (id int, op text);
create function s_audit() returns trigger language plpgsql as $$
begin insert into audit values (new.id, tg_op); return new; end $$;
create trigger s_audit before insert or update on s for each row execute function s_audit();
"""


def _linked(rig, side: str) -> list[tuple]:
    return rig.query(side, "select id, u, e::text, p::text, ai::text, d, n::text from s "
                     "order by id")


def test_sink_only_columns_triggers_unique_values_moving_between_rows(new_db, tmp_path):
    """The sink has a default, an identity, a generated column and a trigger; u is unique
    there, and one batch moves a u value from one row to another (delete first, then a key
    change that frees it)."""
    rig = _rig(new_db, tmp_path, SINK_EXTRAS_A, [link("s", "s", ["id"], "a_to_b")],
               schema_b=SINK_EXTRAS_B)
    try:
        _write(rig, "a", [f"insert into s select g, 'u' || g, 'ok', row(g, 'y ' || g)::pair, "
                          f"array[g, null], g, g / 3.0 from generate_series(1, {N}) g"])
        wait_until(lambda: _linked(rig, "a") == _linked(rig, "b"), 60, "inserts")
        assert rig.query("b", "select count(*) from s where extra = 'dflt' and gen = u || '!' "
                         "and ident is not null") == [(N,)]
        # u5 moves from row 5 to row 6; row 7 takes key 1007 keeping its u
        _write(rig, "a", ["delete from s where id = 5", "update s set u = 'u5' where id = 6",
                          "update s set id = 1007 where id = 7",
                          "update s set e = 'happy', p.y = E'q\"\\\\', ai = ai || 3"])
        wait_until(lambda: _linked(rig, "a") == _linked(rig, "b"), 60, "moved unique values")
        _drained(rig, "no row error here")
        assert rig.query("b", "select count(*) from audit where op = 'UPDATE'")[0][0] >= N - 2
    finally:
        rig.close()


def test_a_row_the_sink_rejects_is_isolated_and_the_rest_arrive(new_db, tmp_path):
    """A sink check constraint rejects one row of a staged batch: the batch falls back to
    the item path, the row goes to the dead letter, every other row arrives."""
    rig = _rig(new_db, tmp_path, "create table r (id int primary key, v int)",
               [link("r", "r", ["id"], "a_to_b")],
               schema_b="create table r (id int primary key, v int check (v <> 77))")
    try:
        _write(rig, "a", [f"insert into r select g, g from generate_series(1, {N}) g"])
        wait_until(lambda: rig.query("b", "select count(*) from r") == [(N - 1,)], 60,
                   "the other rows")
        wait_until(lambda: rig.query("a", "select count(*) from sync.dead_letter") != [(0,)]
                   or rig.query("b", "select count(*) from sync.dead_letter") != [(0,)], 60,
                   "the rejected row's dead letter")
        assert ISOLATING in rig.log_text()
        assert rig.query("b", "select count(*) from r where v = 77") == [(0,)]
    finally:
        rig.close()


FK = """
create table parent (id int primary key, v text);
create table child (id int primary key, parent_id int references parent (id)
                    on delete cascade, v text);
"""


def test_two_linked_tables_with_a_foreign_key(new_db, tmp_path):
    rig = _rig(new_db, tmp_path, FK, [link("parent", "parent", ["id"], "a_to_b"),
                                      link("child", "child", ["id"], "a_to_b")])
    try:
        tables = {"parent": ["id"], "child": ["id"]}
        _write(rig, "a", [f"insert into parent select g, 'p' || g from generate_series(1, {N}) g",
                          f"insert into child select g, g, 'c' || g "
                          f"from generate_series(1, {N}) g"])
        _equal(rig, tables, "parents and children")
        _write(rig, "a", ["delete from parent where id <= 50",
                          "insert into parent values (1, 'p1 again')",
                          "insert into child values (1000, 1, 'new child')"])
        _equal(rig, tables, "deletes that cascade and a re-inserted parent")
    finally:
        rig.close()


def test_renamed_columns_filters_transforms_and_ignored_deletes(new_db, tmp_path):
    schema_a = ("create table src (id int, tag text, note text, Email text, "
                "primary key (tag, id)); "
                "create table arch (id int primary key, v text)")
    schema_b = ("create table dst (\"Note\" text, tag_b text, \"ID b\" int, mail text, "
                "primary key (\"ID b\", tag_b)); "
                "create table arch (id int primary key, v text)")
    links = [
        link("ren", "src", ["tag", "id"], "a_to_b", b={"peer": "b", "table": "dst"},
             columns={"id": "ID b", "tag": "tag_b", "note": "Note", "email": "mail"},
             where="id % 10 <> 0", transform={"email": "lower(email)"}),
        link("arch", "arch", ["id"], "a_to_b", deletes="ignore")]
    rig = _rig(new_db, tmp_path, schema_a, links, schema_b=schema_b)

    def seen_b() -> list[tuple]:
        return rig.query("b", 'select "ID b", tag_b, "Note", mail from dst order by 1, 2')

    def expected() -> list[tuple]:
        return rig.query("a", "select id, tag, note, lower(email) from src "
                         "where id % 10 <> 0 order by 1, 2")
    try:
        _write(rig, "a", [f"insert into src select g, 't' || (g % 3), E'n\\t' || g, "
                          f"'A' || g || '@X.org' from generate_series(1, {N}) g",
                          f"insert into arch select g, 'v' || g from generate_series(1, {N}) g"])
        wait_until(lambda: seen_b() == expected(), 60, "renamed, filtered, transformed rows")
        _equal(rig, {"arch": ["id"]}, "arch")
        _write(rig, "a", ["update src set id = id + 1 where id % 10 = 9",  # move out of filter
                          "update src set id = id + 1 where id % 10 = 0 and id < 50",
                          "update src set email = 'MiXeD@x' where id = 2",
                          "delete from src where id between 60 and 70",
                          "delete from arch where id <= 100", "update arch set v = 'z'"])
        wait_until(lambda: seen_b() == expected(), 60, "moves across the filter")
        assert rig.query("b", "select count(*), count(*) filter (where v = 'z') from arch") \
            == [(N, N - 100)]
        _drained(rig, "no row error here")
    finally:
        rig.close()


def test_truncate_in_the_same_batch_as_rows(new_db, tmp_path):
    rig = _rig(new_db, tmp_path, "create table tr (id int primary key, v text)",
               [link("tr", "tr", ["id"], "a_to_b")])
    try:
        _write(rig, "a", [f"insert into tr select g, 'v' || g from generate_series(1, {N}) g"])
        _equal(rig, {"tr": ["id"]}, "inserts")
        _write(rig, "a", ["truncate tr",
                          f"insert into tr select g, 'w' || g from generate_series(50, {N + 50}) g",
                          "update tr set v = 'x' where id = 60"])
        _equal(rig, {"tr": ["id"]}, "truncate and rows in one transaction")
        _write(rig, "a", [f"insert into tr select g, 'y' from generate_series(1000, {1000 + N}) g",
                          "truncate tr", "insert into tr values (5, 'after')"])
        _equal(rig, {"tr": ["id"]}, "rows then truncate then a row")
        _drained(rig, "no row error here")
    finally:
        rig.close()


def test_a_hundred_columns_and_the_same_key_signalled_many_times(new_db, tmp_path):
    cols = ", ".join(f"c{i} text" for i in range(1, 101))
    rig = _rig(new_db, tmp_path, f"create table w (id int primary key, {cols})",
               [link("w", "w", ["id"], "a_to_b")])
    try:
        vals = ", ".join(f"'v{i}-' || g" for i in range(1, 101))
        _write(rig, "a", [f"insert into w select g, {vals} from generate_series(1, {N}) g"]
               + [f"update w set c{i} = c{i} || E'\\t{i}' where id <= 3" for i in range(1, 101)])
        _equal(rig, {"w": ["id"]}, "wide rows updated many times in one batch")
        _drained(rig, "no row error here")
    finally:
        rig.close()


NESTED = """
create domain pos as int not null check (value > 0);
create domain small_pos as pos check (value < 1000000);
create type mood as enum ('sad', 'ok');
create domain moods as mood[] not null;
create table nd (id int primary key, v small_pos, m moods);
"""


def test_a_batch_larger_than_the_grow_limit(new_db, tmp_path):
    """40 rows of 1 MB each in one transaction: more than drain.GROW_BYTES (16 MB)."""
    rig = _rig(new_db, tmp_path, "create table big (id int primary key, t text)",
               [link("big", "big", ["id"], "a_to_b")])
    try:
        _write(rig, "a", ["insert into big select g, repeat(md5(g::text), 32768) "
                          "from generate_series(1, 40) g",
                          f"insert into big select g, 's' from generate_series(100, {100 + N}) g"])
        wait_until(lambda: rig.query("b", "select count(*), sum(length(t)) from big")
                   == rig.query("a", "select count(*), sum(length(t)) from big"), 60, "big rows")
        _equal(rig, {"big": ["id"]}, "big rows")
        _drained(rig, "no row error here")
    finally:
        rig.close()


def test_b_to_a_with_renamed_columns_in_another_order(new_db, tmp_path):
    """The sink is side a and its columns stand in another order than the source's."""
    schema_a = "create table pa (v2 text, v1 int, \"K\" int primary key, v3 numeric)"
    schema_b = "create table pb (k int primary key, v1 int, v2 text, v3 numeric)"
    rig = _rig(new_db, tmp_path, schema_a, [
        link("pab", "pa", ["K"], "b_to_a", b={"peer": "b", "table": "pb"},
             columns={"K": "k", "v1": "v1", "v2": "v2", "v3": "v3"})], schema_b=schema_b)

    def seen(side: str, table: str, k: str) -> list[tuple]:
        return rig.query(side, f"select {k}, v1, v2, v3::text from {table} order by 1")
    try:
        _write(rig, "b", [f"insert into pb select g, -g, E'\\\\t' || g, g / 7.0 "
                          f"from generate_series(1, {N}) g"])
        wait_until(lambda: seen("a", "pa", '"K"') == seen("b", "pb", "k"), 60, "b to a")
        _write(rig, "b", ["delete from pb where k < 20", "update pb set v3 = v3 * 1.0"])
        wait_until(lambda: seen("a", "pa", '"K"') == seen("b", "pb", "k"), 60, "b to a again")
        _drained(rig, "no row error here")
    finally:
        rig.close()


@pytest.mark.parametrize("env", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_the_staging_table_does_not_pin_the_sinks_types(new_db, tmp_path, env):
    """A sink migration moves columns off an enum and a domain and drops them while the
    bridge runs: the bridge's session-lived staging table must not hold the types (the
    item path names them per statement only)."""
    schema = ("create type mood as enum ('sad', 'ok'); create domain posint as int "
              "check (value > 0); create table pt (id int primary key, e mood, d posint)")
    rig = _rig(new_db, tmp_path, schema, [link("pt", "pt", ["id"], "a_to_b")], env=env)
    try:
        _write(rig, "a", [f"insert into pt select g, 'ok', g from generate_series(1, {N}) g"])
        _equal(rig, {"pt": ["id"]}, "inserts")
        # rows the sink has: staged, not COPYed straight into pt
        _write(rig, "a", ["update pt set e = 'sad', d = d + 1"])
        _equal(rig, {"pt": ["id"]}, "updates")
        rig.execute("b", "alter table pt alter column e type text, alter column d type int")
        rig.execute("b", "drop type mood")
        rig.execute("b", "drop domain posint")
    finally:
        rig.close()


@pytest.mark.parametrize("env", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_a_sink_domain_key_can_gain_a_constraint_while_the_bridge_runs(new_db, tmp_path, env):
    """The staged path stages a key column as its domain: `alter domain ... add constraint`
    on the sink checks every column of the domain, the bridge's temp table's too."""
    schema = ("create domain code as text check (value <> ''); "
              "create table dk (k code primary key, v int)")
    rig = _rig(new_db, tmp_path, schema, [link("dk", "dk", ["k"], "a_to_b")], env=env)
    try:
        _write(rig, "a", [f"insert into dk select 'k' || g, g from generate_series(1, {N}) g"])
        _equal(rig, {"dk": ["k"]}, "inserts")
        _write(rig, "a", ["update dk set v = v + 1"])  # rows the sink has: staged
        _equal(rig, {"dk": ["k"]}, "updates")
        rig.execute("b", "alter domain code add constraint short check (length(value) < 50)")
        rig.execute("b", "alter domain code set not null")
    finally:
        rig.close()



def test_a_hundred_keys_are_staged_by_default(new_db, tmp_path):
    """Without SYNCBRIDGE_STAGE_FROM a batch of fewer than 100 keys goes as items, one of
    150 staged (its staging table shows on the sink: 50 of its keys are rows the sink
    has, so they cannot go straight into the table)."""
    rig = make_rig(new_db, tmp_path, "create table df (id int primary key, v text)",
                   [link("df", "df", ["id"], "a_to_b")])
    unsettle(rig, SETTINGS)
    rig.start_bridge()

    def stages() -> int:
        return rig.query("b", "select count(*) from pg_class "
                         "where relname like 'syncbridge_stage_%'")[0][0]
    try:
        _write(rig, "a", ["insert into df select g, E'\\N\t' from generate_series(1, 50) g"])
        _equal(rig, {"df": ["id"]}, "a small batch")
        assert stages() == 0
        _write(rig, "a", ["update df set v = v || 'x'",
                          f"insert into df select g, E'\\N\t' from generate_series(51, {N}) g"])
        _equal(rig, {"df": ["id"]}, "a large batch")
        assert stages() == 1
        _drained(rig, "no row error here")
    finally:
        rig.close()


def test_a_sink_type_dropped_with_cascade_and_recreated(new_db, tmp_path):
    """The DBA follows the hint of `drop type` (CASCADE), which drops the staging table's
    column of that type too, then recreates the type: the link's shape is as before and
    the next staged batch must still arrive, staged."""
    schema = ("create type mood as enum ('sad', 'ok'); "
              "create table pt (id int primary key, e mood, v int)")
    rig = _rig(new_db, tmp_path, schema, [link("pt", "pt", ["id"], "a_to_b")])
    try:
        _write(rig, "a", [f"insert into pt select g, 'ok', g from generate_series(1, {N}) g"])
        _equal(rig, {"pt": ["id"]}, "inserts")
        _write(rig, "a", ["update pt set v = v + 1"])  # rows the sink has: staged
        _settled(rig, "pt", ["id"], "updates")
        rig.execute("b", "alter table pt alter column e type text; drop type mood cascade; "
                         "create type mood as enum ('sad', 'ok'); "
                         "alter table pt alter column e type mood using e::mood")
        _write(rig, "a", ["update pt set v = v + 1, e = 'sad'"])
        _settled(rig, "pt", ["id"], "a batch after the type came back")
        _drained(rig, "no row error here")
    finally:
        rig.close()


# On the sink: which statement wrote each batch (the trigger sees the bridge's own
# statement: COPY into the table, the upsert from the staging table, or the items' upsert)
PATHS = """
create table paths (at serial, stmt text);
create function note_path() returns trigger language plpgsql as $$
begin
    insert into paths (stmt) values (case
        when current_query() ilike 'copy %' then 'direct'
        when current_query() like '%syncbridge_stage_%' then 'staged'
        else 'items' end);
    return null;
end $$;
create trigger note_path after insert or update on nd for each statement
    execute function note_path();
"""


def test_new_rows_go_straight_into_the_sink_table_and_rows_it_has_through_the_stage(
        new_db, tmp_path):
    """A batch of keys the sink lacks is COPYed straight into the table; one with keys it
    has (updates, or new and old keys mixed) is refused there, rolled back to its
    savepoint and staged, so its rows are updated exactly and nothing is doubled."""
    schema = "create table nd (id int primary key, v text, n numeric, t timestamptz)"
    rig = _rig(new_db, tmp_path, schema, [link("nd", "nd", ["id"], "a_to_b")],
               schema_b=schema + ";" + PATHS, env={})

    def paths() -> list[str]:
        return [r[0] for r in rig.query("b", "select stmt from paths order by at")]
    try:
        _write(rig, "a", [f"insert into nd select g, E'a\\tb\\\\' || g, g / 7.0, "
                          f"'2026-01-01 12:00+05:45' from generate_series(1, {N}) g"])
        _settled(rig, "nd", ["id"], "new rows")
        assert paths() == ["direct"]
        _write(rig, "a", ["update nd set v = v || 'u', n = n * 1.00",
                          f"insert into nd select g, 'new', g from generate_series({N + 1}, "
                          f"{2 * N}) g"])
        _settled(rig, "nd", ["id"], "updated and new rows in one batch")
        # the upsert fires the statement triggers of its insert and of its update
        assert paths()[0] == "direct" and set(paths()[1:]) == {"staged"}, paths()
        assert rig.query("b", "select count(*) from nd") == [(2 * N,)]
        _drained(rig, "no row error here")
    finally:
        rig.close()


def test_a_refused_direct_copy_waits_longer_each_time_and_a_success_resets_it():
    """Direct's back-off over staged batches: 1, 2, 4 ... up to DIRECT_WAIT_MAX skipped
    after refusals in a row, none after a success, never with a missing row."""
    from syncbridge.engine.postgres.staged import DIRECT_WAIT_MAX, Direct, Rows

    found, gone = Rows([], 1, 0, ["1"]), Rows([], 0, 1, ["1"])
    d = Direct()
    assert not d.due(gone) and d.due(found)
    skipped = []
    for _ in range(10):
        d.refused()
        n = 0
        while not d.due(found):
            n += 1
        skipped.append(n)
    assert skipped == [1, 2, 4, 8, 16, 32, 64, 128, 256, 256] and DIRECT_WAIT_MAX == 256
    d.took()
    assert d.due(found)
    d.refused()
    assert not d.due(found) and d.due(found)
