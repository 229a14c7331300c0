"""`syncbridge backfill`: rows that predate the link reach the sink, resumably."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from rigs import Rig, link, make_rig
from syncbridge.bridge.bench.rig import wait_until
from syncbridge.engine.config import ConfigError
from syncbridge.engine.install import install
from syncbridge.engine.reconcile import backfill
from syncbridge.engine.validate import shapes

SCHEMA = "create table items (id int primary key, v text, n numeric(12,2));"
ROWS = 20_000


def _cli(rig: Rig, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "--config",
                           str(rig.config_path), "backfill", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture
def rig(new_db, tmp_path):
    a, b = new_db("a", migrated=True), new_db("b", migrated=True)
    r = Rig(tmp_path, a, b, [link("items", "items", ["id"], "a_to_b")])
    for side in ("a", "b"):
        r.execute(side, SCHEMA)
    r.execute("a", f"insert into items select g, 'v' || g, g / 7.0 "
                   f"from generate_series(1, {ROWS}) g")
    r.install_notes = r.setup()
    yield r
    r.close()


def _applied_signals(rig: Rig) -> int:
    return rig.query("b", "select coalesce(sum(signals), 0) from sync.applied_batches")[0][0]


def test_install_names_the_backfill_command(rig):
    assert any("syncbridge backfill items" in line for line in rig.install_notes)


def test_killed_backfill_resumes_and_signals_every_key_once(rig):
    rig.start_bridge()
    first = _cli(rig, "items", "--chunk", "500", env={"SYNCBRIDGE_FAULT": "backfill_chunk:7"})
    assert first.returncode == -signal.SIGKILL, first.stderr
    run = rig.query("a", "select status, signalled, total from sync.backfill_runs")
    assert run == [("running", 3500, ROWS)]  # 7 committed chunks, then the kill
    second = _cli(rig, "items", "--chunk", "500", "--quiet")
    assert second.returncode == 0, second.stderr
    assert "resumed and finished: 20000 key(s)" in second.stdout
    rig.wait_equal({"items": ["id"]}, 60)
    rig.wait_drained()
    assert _applied_signals(rig) == ROWS, "each key signalled exactly once across the kill"
    assert rig.query("a", "select status, signalled, total, finished_at is not null "
                          "from sync.backfill_runs") == [("finished", ROWS, ROWS, True)]
    wait_until(lambda: rig.query("a", "select backfill from sync.status")
               == [(f"done {ROWS}",)], 10, "sync.status to show the backfill")


def test_throttle_bounds_the_backfill_signals_in_the_queue(rig):
    seen: list[int] = []

    def sample(_run) -> None:
        seen.append(rig.query("a", "select count(*) from sync.queue")[0][0])

    rig.start_bridge()
    cfg = rig.config
    shape = shapes(cfg, ["items"])["items"]
    run = backfill.backfill(cfg, shape, chunk=500, max_pending=1500, progress=False,
                            on_chunk=sample)
    assert run.status == "finished" and run.signalled == ROWS
    assert max(seen) <= 1500, seen
    rig.wait_equal({"items": ["id"]}, 60)


def test_where_and_keys_file_signal_only_those_keys(rig, tmp_path):
    out = _cli(rig, "items", "--where", "id % 1000 = 0 and v like 'v%'", "--quiet")
    assert out.returncode == 0, out.stderr
    assert rig.query("a", "select count(*) from sync.queue") == [(20,)]
    keys = tmp_path / "keys.txt"
    keys.write_text('7\n{"id": 8}\n\n99999\n')
    out = _cli(rig, "items", "--keys", str(keys), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "3 key(s)" in out.stdout
    rig.start_bridge()
    rig.wait_drained()
    assert [r[0] for r in rig.rows("b", "items", ["id"])] == [
        7, 8, *range(1000, ROWS + 1, 1000)]


def test_a_one_way_link_cannot_be_backfilled_from_its_sink(rig):
    with pytest.raises(ConfigError, match="not a source"):
        backfill.source_side(rig.config, "items", "b")


def test_backfill_rows_then_live_changes_converge(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "both")])
    try:
        rig.execute("b", "insert into items select g, 'b' || g, g from generate_series(1, 50) g")
        notes = list(install(rig.config))
        assert any("`syncbridge backfill items --side b`" in n for n in notes), notes
        rig.start_bridge()
        out = _cli(rig, "items", "--side", "b", "--quiet")
        assert out.returncode == 0, out.stderr
        # the CLI returns once every key is signalled, not applied: let the rows land first
        wait_until(lambda: rig.query("a", "select count(*) from items") == [(50,)], 30,
                   "the backfilled rows on a")
        rig.execute("a", "update items set v = 'changed on a' where id <= 10")
        rig.wait_equal({"items": ["id"]})
        assert rig.query("b", "select count(*) from items where v = 'changed on a'") == [(10,)]
    finally:
        rig.close()


def test_progress_bar_draws_on_a_terminal_and_is_silent_otherwise():
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = backfill.Progress("backfill items side a", 1000, stream=out)
    bar.update(400)
    bar.update(1000, final=True)
    text = out.getvalue()
    assert "backfill items side a" in text and "1000/1000" in text and "100%" in text
    quiet = io.StringIO()
    bar = backfill.Progress("backfill items side a", 1000, stream=quiet)
    bar.update(1000, final=True)
    assert quiet.getvalue() == ""
