"""`syncbridge bench --compare logical` end to end, with tiny sizes.

Every figure is still measured for both engines (the catch-up and bulk rows, a second
of paced latency writes at 200/s, one pgbench run each, a second of idle counting):
the test is that the compare produces them all, not how big they are."""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import psycopg
import pytest

from syncbridge.bridge import cli
from syncbridge.bridge.bench.core import SCHEMA, Bench, with_payload
from syncbridge.bridge.bench.logical import CPU_KEYS, ENGINES, KEYS
from syncbridge.bridge.bench.native import cpu_seconds, server_cpu_seconds
from syncbridge.bridge.bench.rig import wait_until


def test_compare_logical_writes_every_figure_for_both_engines(tmp_path, capsys):
    out = tmp_path / "compare.json"
    assert cli.main(["bench", "--compare", "logical", "--rows", "500", "--seconds", "1",
                     "--overhead-seconds", "1", "--idle-seconds", "1",
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == set(KEYS)
    for key in KEYS:
        for engine in ENGINES:
            value = report[key][engine]["median"]
            assert not math.isnan(value), (key, engine)
            if key in ("idle_statements_s", "idle_cpu_pct", *CPU_KEYS):
                # CPU is counted in clock ticks (10 ms): a 500-row catch-up may use none
                assert value >= 0, (key, engine)
            else:
                assert value > 0, (key, engine)
        assert "ratio" in report[key]
    assert report["idle_statements_s"]["logical"]["median"] == 0
    assert report["catchup_engine_cpu_us_row"]["logical"]["median"] == 0  # no process of its own
    assert "median of 1 run(s)" in capsys.readouterr().out


def test_server_cpu_counts_the_sessions_that_ended(pg_server):
    """A catch-up's server CPU includes processes that came and went in it (autovacuum
    workers, sessions): the postmaster's reaped children count, not only the live ones."""
    if pg_server.embedded is None:
        pytest.skip("SYNC_TEST_PG_DSN: the server's processes are not this test's to read")
    postmaster = pg_server.embedded.postmaster_pid()
    before = server_cpu_seconds(postmaster)
    with psycopg.connect(pg_server.admin_dsn) as c:
        backend = c.execute("select pg_backend_pid()").fetchone()[0]
        c.execute("select count(*) from generate_series(1, 5000000)")
        used = cpu_seconds([backend])
    assert used >= 0.1, "the query should have used a measurable share of a core"
    # gone from /proc once the postmaster reaped it (a zombie is still listed)
    wait_until(lambda: not os.path.exists(f"/proc/{backend}"), 10, "the backend to be reaped")
    assert server_cpu_seconds(postmaster) - before >= used - 0.02  # one clock tick


def test_the_timed_look_waits_for_every_row_not_only_the_last(new_db, tmp_path):
    """The catch-up and bulk clocks stop at an index probe of the last row written; a
    count in the probe's snapshot must still hold them while an earlier row is missing
    (an engine that applied out of order would otherwise be timed too early)."""
    dsn = new_db("look")
    args = argparse.Namespace(direction="a_to_b", batch_size=100, no_notify=False)
    bench = Bench(args, dsn, dsn, tmp_path)
    bench.rig.execute("b", SCHEMA)
    insert = with_payload("insert_100")
    bench.rig.execute("b", insert, (1, 4))
    bench.rig.execute("b", insert, (6, 10))
    with pytest.raises(TimeoutError, match="every row"):
        bench._wait_rows(10, 10, "every row", timeout=0.3)
    bench.rig.execute("b", insert, (5, 5))
    before = time.monotonic()
    assert bench._wait_rows(10, 10, "every row", timeout=30) >= before
