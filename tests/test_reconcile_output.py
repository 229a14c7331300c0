"""What `check` and `repair` print: both values, stable order, dry runs, rule names."""

from __future__ import annotations

import subprocess
import sys

from rigs import link, make_rig

SCHEMA = "create table t (id int, k text, label text, primary key (k, id));"


def _cli(rig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", *args, "--config",
                           str(rig.config_path)], capture_output=True, text=True, timeout=120)


def _quiet(rig, side: str, statement: str) -> None:
    """Write as the bridge would (capture does not signal it): drift for check to find."""
    other = "b" if side == "a" else "a"
    rig.execute(side, f"begin; select set_config('syncbridge.origin', 't:{other}', true); "
                      f"{statement}; commit;")


def _drift(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("t", "t", ["k", "id"], "both")])
    for side in ("a", "b"):
        _quiet(rig, side, "insert into t select g, 'k', 'label ' || g from generate_series(1, 5) g")
    _quiet(rig, "b", "update t set label = repeat('long value on b ', 10) where id = 2")
    _quiet(rig, "b", "delete from t where id = 3")
    _quiet(rig, "b", "insert into t values (9, 'k', 'only on b')")
    return rig


def test_check_prints_both_values_truncated_in_a_stable_order(new_db, tmp_path):
    rig = _drift(new_db, tmp_path)
    try:
        first = _cli(rig, "check", "t", "--settle", "1")
        assert first.returncode == 1, first.stderr
        lines = first.stdout.splitlines()[1:]
        assert lines == [
            '  different     {"id": 2, "k": "k"} label: a="label 2" '
            'b="long value on b long value on b long v…',
            '  missing_on_a  {"id": 9, "k": "k"}',
            '  missing_on_b  {"id": 3, "k": "k"}',
        ]
        assert _cli(rig, "check", "t", "--settle", "1").stdout.splitlines()[1:] == lines
    finally:
        rig.close()


def test_repair_dry_run_lists_inserts_updates_deletes_and_signals_nothing(new_db, tmp_path):
    rig = _drift(new_db, tmp_path)
    try:
        assert _cli(rig, "check", "t", "--settle", "1").returncode == 1
        dry = _cli(rig, "repair", "t", "--prefer", "a", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines() == [
            "t: dry run, nothing signalled: repairing from side a (check run 1) would signal "
            "3 key(s); on side b (b public.t) this inserts 1, updates 1 and deletes 1 row(s)",
            '  would insert {"id": 3, "k": "k"}',
            '  would update {"id": 2, "k": "k"}',
            '  would delete {"id": 9, "k": "k"}',
        ]
        assert rig.query("a", "select count(*) from sync.queue") == [(0,)]
        done = _cli(rig, "repair", "t", "--prefer", "a")
        assert done.stdout.strip() == (
            "t: signalled 3 key(s) of side a from check run 1; on side b (b public.t) this "
            "inserts 1, updates 1 and deletes 1 row(s)")
        assert rig.query("a", "select count(*) from sync.queue") == [(3,)]
    finally:
        rig.close()


def test_a_rule_with_a_syntax_error_is_named(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("t", "t", ["k", "id"], "a_to_b")])
    try:
        rig.config_path.write_text(rig.config_path.read_text() + (
            '\n[[rules]]\nname = "broken_rule"\npeer = "a"\nsql = "select * from t where (id"\n'))
        out = _cli(rig, "check", "broken_rule")
        assert out.returncode == 2
        [line] = out.stdout.strip().splitlines()
        assert line.startswith("rule broken_rule: ERROR ") and "syntax error" in line
    finally:
        rig.close()
