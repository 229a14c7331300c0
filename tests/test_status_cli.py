"""`syncbridge status` fits 100 columns; --wide shows every column the view has."""

from __future__ import annotations

import subprocess
import sys

from rigs import link, make_rig


def _status(rig, *extra: str) -> str:
    out = subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "status", "--config",
                          str(rig.config_path), *extra], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_status_fits_100_columns_and_wide_has_every_view_column(new_db, tmp_path):
    name = "appointments_with_a_rather_long_link_name"
    rig = make_rig(new_db, tmp_path, "create table t (id int primary key, v text);",
                   [link(name, "t", ["id"], "both")])
    try:
        # a queued signal and a long error, as sync.status would show them
        rig.execute("a", "insert into t values (1, 'x')")
        rig.execute("a", "insert into sync.link_state (link, source_side, last_error) "
                         "values (%s, 'a', repeat('connection refused ', 20)) "
                         "on conflict do nothing", (name,))
        narrow = _status(rig)
        assert all(len(line) <= 100 for line in narrow.splitlines()), narrow
        assert name[:20] in narrow and "queued" in narrow
        columns = [r[0] for r in rig.query(
            "a", "select attname from pg_attribute where attrelid = 'sync.status'::regclass "
                 "and attnum > 0 order by attnum")]
        wide = _status(rig, "--wide")
        header = wide.splitlines()[0].split()
        assert header == columns
    finally:
        rig.close()


def test_status_reads_a_hub_whose_date_and_interval_styles_are_unusual(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, "create table t (id int primary key, v text);",
                   [link("t", "t", ["id"])])
    try:
        db = rig.dsn["a"].rsplit("/", 1)[1]
        rig.execute("a", f"alter database \"{db}\" set datestyle = 'German'")
        rig.execute("a", f"alter database \"{db}\" set intervalstyle = 'sql_standard'")
        rig.execute("a", "insert into t values (1, 'queued, no bridge')")
        assert "t" in _status(rig, "--wide")
    finally:
        rig.close()
