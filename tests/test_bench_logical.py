"""`syncbridge bench --compare logical` end to end, with tiny sizes.

Every figure is still measured for both engines (the catch-up and bulk rows, a second
of paced latency writes at 200/s, one pgbench run each, a second of idle counting):
the test is that the compare produces them all, not how big they are."""

from __future__ import annotations

import json
import math

from syncbridge.bridge import cli
from syncbridge.bridge.bench.logical import ENGINES, KEYS


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
            if key in ("idle_statements_s", "idle_cpu_pct"):
                assert value >= 0, (key, engine)
            else:
                assert value > 0, (key, engine)
        assert "ratio" in report[key]
    assert report["idle_statements_s"]["logical"]["median"] == 0
    assert "median of 1 run(s)" in capsys.readouterr().out
