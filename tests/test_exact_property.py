"""Property: rows of mixed types and edits, applied through a real bridge process,
arrive with exactly the source's representation (issue 11)."""

from __future__ import annotations

import math
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from rigs import STAGED, link, make_rig
from syncbridge.bridge.bench.rig import wait_until

SCHEMA = """
create table m (id int primary key, n numeric, f float8, t text, by bytea, j jsonb,
                iv interval, ts timestamptz, a int[]);
"""
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | text
    | st.floats(allow_nan=False, allow_infinity=False),  # JSON 1.0, 1e-07: numeric scale
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8)
row = st.fixed_dictionaries({
    "n": st.none() | st.decimals(allow_nan=True, allow_infinity=True)
    .filter(lambda d: not d.is_snan()),
    "f": st.none() | st.floats(allow_nan=True, allow_infinity=True, width=64),
    "t": st.none() | text,
    "by": st.none() | st.binary(max_size=20),
    "j": st.none() | json_value.map(Jsonb),
    "iv": st.none() | st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000),
                                st.integers(-10**9, 10**9)).map(
        lambda p: f"{p[0]} mons {p[1]} days {p[2]} microseconds"),
    "ts": st.none() | st.datetimes().map(lambda d: f"{d.isoformat()}+05:45"),
    "a": st.none() | st.lists(st.none() | st.integers(-2**31, 2**31 - 1), max_size=4),
})
edits = st.lists(st.tuples(st.integers(1, 12), st.sampled_from(["upsert", "delete"]), row),
                 min_size=1, max_size=15)


def _sql_value(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)  # 'nan', 'inf', '-inf': float8 text input
    if isinstance(v, Decimal) and not v.is_finite():
        return "NaN" if v.is_nan() else ("Infinity" if v > 0 else "-Infinity")
    return v


@pytest.mark.parametrize("direction, env", [("both", None), ("a_to_b", STAGED)],
                         ids=["both", "a_to_b-staged"])
def test_mixed_rows_and_edits_arrive_exactly(new_db, tmp_path, direction, env):
    """Two-way (items), and one-way with every batch staged (COPY text)."""
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("m", "m", ["id"], direction)])
    for side, tz in (("a", "Pacific/Chatham"), ("b", "America/Caracas")):
        db = rig.dsn[side].rsplit("/", 1)[1]
        rig.execute(side, f"alter database \"{db}\" set timezone = '{tz}'")
        rig.execute(side, f"alter database \"{db}\" set intervalstyle = 'iso_8601'")
    rig.start_bridge(env)
    cols = ["n", "f", "t", "by", "j", "iv", "ts", "a"]
    upsert = (f"insert into m (id, {', '.join(cols)}) values (%s, {', '.join(['%s'] * 8)}) "
              f"on conflict (id) do update set "
              + ", ".join(f"{c} = excluded.{c}" for c in cols))

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(edits, st.sampled_from(["a", "b"] if direction == "both" else ["a"]))
    def run(changes, side):
        with psycopg.connect(rig.dsn[side], autocommit=True) as c:
            for key, kind, values in changes:
                if kind == "delete":
                    c.execute("delete from m where id = %s", (key,))
                else:
                    c.execute(upsert, (key, *[_sql_value(values[k]) for k in cols]))
        wait_until(lambda: rig.equal("m", ["id"]), 60, "the edits to arrive")

    try:
        run()
        conflicts = rig.query("a", "select count(*) from sync.conflicts")[0][0]
        assert conflicts == 0  # edits on one side at a time are never conflicts
    finally:
        rig.close()
