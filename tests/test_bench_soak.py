"""`syncbridge bench --only soak` end to end, with tiny numbers (a few seconds).

4 s of upserts at 200 rows/s, RSS sampled every half second, on the test server's
databases (--dsn-a/--dsn-b): the bench printed every sample and every figure, the
figures are the samples' (RSS of a live process, a slope), and every row arrived.
"""

from __future__ import annotations

import json
import math
import re

import psycopg

from syncbridge.bridge import cli
from syncbridge.bridge.bench.soak import slope_per_hour

FIGURES = ("rss_start_mb", "rss_end_mb", "rss_peak_mb", "rss_growth_mb_per_hour",
           "anon_growth_mb_per_hour", "bridge_cpu_s_per_1k_rows", "bridge_cpu_share_of_core",
           "rows_written", "sink_equals_source")
SAMPLE = re.compile(r"^  soak +(\d+)s  rss_mb +([\d.]+)  anon_mb +([\d.]+)  rows ([\d,]+)$",
                    re.MULTILINE)


def test_soak_bench_prints_rss_samples_and_its_figures(new_db, tmp_path, capsys):
    dsn_a, dsn_b = new_db("soak_a"), new_db("soak_b")
    out = tmp_path / "soak.json"
    assert cli.main(["bench", "--only", "soak", "--dsn-a", dsn_a, "--dsn-b", dsn_b,
                     "--rate", "200", "--seconds", "4", "--sample-seconds", "0.5",
                     "--warmup-seconds", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["soak"]
    printed = capsys.readouterr().out
    for name in FIGURES:
        assert not math.isnan(figures[name]), name
        assert f"    {name} " in printed, name
    samples = [(int(t), float(r), float(a)) for t, r, a, _ in SAMPLE.findall(printed)]
    assert len(samples) >= 6
    # a Python process running asyncpg is tens of MB; its heap part is less than the whole
    assert all(20 < rss < 150 and 0 < anon < rss for _, rss, anon in samples)
    assert abs(figures["rss_end_mb"] - samples[-1][1]) < 0.06  # printed to 0.1 MB
    assert min(r for _, r, _ in samples) <= figures["rss_start_mb"] <= figures["rss_peak_mb"]
    assert figures["bridge_cpu_s_per_1k_rows"] > 0
    assert figures["sink_equals_source"] == 1
    with psycopg.connect(dsn_b) as c:
        assert c.execute("select count(*) from bench_items").fetchone()[0] == min(
            figures["rows_written"], 100_000)


def test_slope_is_least_squares_in_mb_per_hour():
    assert slope_per_hour([(0, 50.0), (1800, 51.0), (3600, 52.0)]) == 2.0
    # noise that rises and falls back is no growth, however large its swing
    assert slope_per_hour([(0, 50.0), (60, 51.0), (120, 51.0), (180, 50.0)]) == 0.0
    assert math.isnan(slope_per_hour([(0, 50.0)]))
