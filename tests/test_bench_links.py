"""`syncbridge bench --only links` end to end, with tiny numbers (about 10 s).

3 busy links and 1 idle one at 50 rows/s each for 2 s, on the test server's
databases (--dsn-a/--dsn-b), so the test can count the tables itself: every row
written to a source table is on its sink, and the bench printed every figure.
"""

from __future__ import annotations

import json
import math

import psycopg
from psycopg import sql

from syncbridge.bridge import cli
from syncbridge.bridge.bench.links import table_name

FIGURES = ("offered_rows_per_s", "written_rows_per_s", "applied_rows_per_s", "lag_p50_ms",
           "lag_p99_ms", "lag_max_ms", "rows_written", "rows_applied", "missing_rows",
           "rows_per_batch", "link_batch_gap_p50_ms", "bridge_cpu_s_per_1k_rows",
           "bridge_cpu_share_of_core", "servers_cpu_s_per_1k_rows", "bridge_peak_rss_mb")


def _counts(dsn: str, tables: list[str]) -> list[int]:
    with psycopg.connect(dsn) as c:
        return [c.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(t)))
                .fetchone()[0] for t in tables]


def test_links_bench_reports_its_figures_and_every_row_arrives(new_db, tmp_path, capsys):
    dsn_a, dsn_b = new_db("links_a"), new_db("links_b")
    out = tmp_path / "links.json"
    assert cli.main(["bench", "--only", "links", "--dsn-a", dsn_a, "--dsn-b", dsn_b,
                     "--links", "3", "--idle-links", "1", "--rate", "50", "--seconds", "2",
                     "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["links"]
    printed = capsys.readouterr().out
    for name in FIGURES:
        assert not math.isnan(figures[name]), name
        assert f"    {name} " in printed, name
    assert (figures["links"], figures["idle_links"]) == (3, 1)
    assert figures["offered_rows_per_s"] == 150
    tables = [table_name(i) for i in range(4)]
    written, applied = _counts(dsn_a, tables), _counts(dsn_b, tables)
    assert written == applied
    assert all(n > 0 for n in written[:3]) and written[3] == 0
    assert figures["rows_written"] == figures["rows_applied"] == sum(written)
    assert figures["missing_rows"] == 0
    assert figures["lag_p50_ms"] <= figures["lag_p99_ms"] <= figures["lag_max_ms"]
    assert figures["bridge_cpu_s_per_1k_rows"] > 0 and figures["bridge_peak_rss_mb"] > 0
