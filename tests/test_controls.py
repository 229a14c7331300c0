"""Link controls (issue 17): pause / resume / set-rate, active_hours, what to propagate.

Real clusters and real `syncbridge run` processes (heal_support.Clusters); the
CLI is run in process through bridge.cli.main. Each test names what it
catches: a pause that loses or applies writes, a rate that is not held, a
window read in the wrong time zone or not opened without a restart, deletes
or truncates propagated against the link's options, a sink TRUNCATE where a
foreign key needs DELETE.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import psycopg
import pytest
from test_wake_lock import _armed as armed

from heal_support import FAST, SCHEMA, Clusters, Writer, arrives, state, status, until
from rigs import link, make_rig
from syncbridge.bridge import cli
from syncbridge.bridge.bench.links import cpu_seconds
from syncbridge.bridge.bench.rig import Rig
from syncbridge.engine.config import ConfigError, parse

FAR_ZONE = "Pacific/Kiritimati"  # UTC+14: a window read in UTC is off by 14 hours


@pytest.fixture(scope="module")
def clusters():
    c = Clusters()
    yield c
    c.destroy()


def _rig(clusters: Clusters, tmp_path, settings: dict[str, Any] | None = None,
         hub_zone: str | None = None, **options: Any) -> Rig:
    """heal_support.make with link options; `hub_zone` is the hub database's TimeZone."""
    dsn_a, dsn_b = clusters.databases()
    if hub_zone:
        with psycopg.connect(dsn_a, autocommit=True) as c:
            c.execute(f"alter database {dsn_a.rsplit('/', 1)[1]} set timezone = '{hub_zone}'")
    rig = Rig(tmp_path, dsn_a, dsn_b, [link("items", "items", ["id"], "a_to_b", **options)],
              {**FAST, **(settings or {})})
    rig.execute("a", SCHEMA)
    rig.execute("b", SCHEMA)
    rig.setup()
    return rig


def _cli(rig: Rig, *args: str) -> int:
    return cli.main(["--config", str(rig.config_path), *args])


def _count(rig: Rig, side: str) -> int:
    return rig.query(side, "select count(*) from items")[0][0]


def _queue(rig: Rig) -> tuple[int, int]:
    """(waiting, taken) signals of the link at its source: a batch taken by the bridge
    is deleted in a transaction still open, so its signals are the locked ones."""
    [(total, free)] = rig.query(
        "a", "select count(*), (select count(*) from (select 1 from sync.queue "
             "where link = 'items' and op <> 'C' for update skip locked) f) "
             "from sync.queue where link = 'items' and op <> 'C'")
    return free, total - free


# -- pause / resume -------------------------------------------------------------------


def test_pause_under_writes_then_resume_loses_nothing(clusters, tmp_path):
    rig = _rig(clusters, tmp_path)
    try:
        rig.start_bridge()
        with Writer(rig.dsn["a"]) as writer:
            until(lambda: _count(rig, "b") > 0, 20, "rows flowing before the pause")
            assert _cli(rig, "pause", "items", "--reason", "maintenance") == 0
            until(lambda: state(rig) == "paused: maintenance", 5, "the paused state")
            until(lambda: "event=paused link=items" in rig.log_text(), 5, "the bridge's pause")
            until(lambda: _queue(rig)[1] == 0, 10, "the batch in flight to finish")
            waiting = _queue(rig)[0]
            until(lambda: _queue(rig)[0] >= waiting + 500, 20, "writes queueing while paused")
            held = _count(rig, "b")
            until(lambda: _queue(rig)[0] >= waiting + 1000, 20, "more writes while paused")
            rig.execute("a", "update items set v = 'updated while paused' where id % 7 = 0")
            rig.execute("a", "delete from items where id % 11 = 0")
            assert _count(rig, "b") == held, "nothing is applied while paused"
            assert _queue(rig)[1] == 0, "nothing is claimed while paused"
            assert _cli(rig, "resume", "items") == 0
            until(lambda: _count(rig, "b") > held, 5, "rows flowing after resume")
            writer.stop.set()
        until(lambda: _queue(rig) == (0, 0) and state(rig) == "idle", 60, "drained")
        assert rig.texts("a", "items", ["id"]) == rig.texts("b", "items", ["id"])
        log = rig.log_text()
        assert "event=paused link=items reason=maintenance" in log
        assert "event=resumed link=items" in log
    finally:
        rig.close()


def test_a_paused_link_whose_source_writes_leaves_the_bridge_idle(clusters, tmp_path):
    """The bridge asleep on LISTEN holds the wake lock, so writers NOTIFY it. A paused
    link's must not keep its drain loop turning (a NOTIFY left its wake event set: it spun
    at a full core until the resume); the pause lets the lock go, so writers stop
    notifying, and sync.status counts what they queue; the resume still wakes the loop
    at once (not its held link's 1 s look: four resumes in a row each under 0.4 s)."""
    rig = _rig(clusters, tmp_path)
    try:
        rig.start_bridge()
        rig.execute("a", "insert into items values (0, 'before')")
        until(lambda: _count(rig, "b") == 1, 20, "the first row")
        until(lambda: armed(rig), 10, "the bridge asleep on LISTEN (writers then notify)")
        for cycle in range(4):
            assert _cli(rig, "pause", "items") == 0
            until(lambda c=cycle: rig.log_text().count("event=paused link=items") > c, 5,
                  "the bridge's pause")
            until(lambda: not armed(rig), 5, "the paused link's wake lock let go")
            for i in range(10):
                rig.execute("a", "insert into items values (%s, 'while paused')",
                            (cycle * 10 + i + 1,))
            if cycle == 0:
                until(lambda: (status(rig).get("queued") or 0) >= 10, 20,
                      "sync.status counting the writes queued while paused")
                start, cpu = time.monotonic(), cpu_seconds(rig.proc.pid)
                time.sleep(2.0)  # the measured window itself
                used = (cpu_seconds(rig.proc.pid) - cpu) / (time.monotonic() - start)
                print(f"paused bridge: {used:.1%} of a core")
                assert used < 0.1, f"the paused bridge used {used:.0%} of a core"
            assert _count(rig, "b") == cycle * 10 + 1, "nothing is applied while paused"
            assert _cli(rig, "resume", "items") == 0
            took = until(lambda c=cycle: _count(rig, "b") == c * 10 + 11, 10,
                         "the paused writes after resume")
            print(f"resume {cycle}: the paused writes arrived {took:.3f}s after sync.resume")
            assert took < 0.4, f"the paused writes arrived {took:.2f}s after the resume"
    finally:
        rig.close()


# -- rate limits ---------------------------------------------------------------------


def test_set_rate_holds_the_link_within_twenty_percent_and_zero_lifts_it(clusters, tmp_path):
    rate, window, rows = 200, 10.0, 4000
    rig = _rig(clusters, tmp_path)
    try:
        assert _cli(rig, "set-rate", "items", str(rate)) == 0
        rig.execute("a", "insert into items select g, 'r' from generate_series(1, %s) g",
                    (rows,))
        rig.start_bridge()
        until(lambda: _count(rig, "b") > 0, 20, "the first batch")
        start, first = time.monotonic(), _count(rig, "b")
        time.sleep(window)  # the measured window itself
        took, moved = time.monotonic() - start, _count(rig, "b") - first
        measured = moved / took
        print(f"rate: {measured:.1f} rows/s over {took:.1f}s (limit {rate})")
        assert 0.8 * rate <= measured <= 1.2 * rate, measured
        biggest = rig.query("b", "select max(signals) from sync.applied_batches")[0][0]
        assert biggest <= rate // 4, f"a batch of {biggest} rows is larger than the rate allows"
        assert status(rig)["rate_limit"] == rate
        assert _cli(rig, "set-rate", "items", "0") == 0
        lifted = until(lambda: _count(rig, "b") == rows, 30, "the rest, unlimited")
        print(f"rate: the remaining rows arrived {lifted:.1f}s after set-rate 0")
        assert lifted < (rows - first - moved) / rate, "set-rate 0 did not lift the limit"
        assert status(rig)["rate_limit"] is None
    finally:
        rig.close()


# -- active_hours -------------------------------------------------------------------------


def _hub_clock(dsn: str) -> tuple[dt.datetime, float]:
    """The hub's local time in its configured TimeZone, and the same instant as epoch."""
    with psycopg.connect(dsn, autocommit=True) as c:
        local, epoch = c.execute(
            "select clock_timestamp() at time zone current_setting('TimeZone'), "
            "extract(epoch from clock_timestamp())::float8").fetchone()
    return local, epoch


def _window(start: dt.datetime, length: dt.timedelta) -> str:
    return f"{start:%H:%M:%S}-{start + length:%H:%M:%S}"


def test_active_hours_hold_the_link_outside_and_it_flows_at_the_window_start(clusters,
                                                                              tmp_path):
    """The window is read in the hub server's TimeZone (here UTC+14, so UTC is wrong by
    14 hours) and opens without a restart."""
    lead = 12.0  # seconds from now to the window start: the bridge starts meanwhile
    rig = _rig(clusters, tmp_path, hub_zone=FAR_ZONE,
               active_hours="00:00-00:01")  # rewritten below, once the zone is set
    try:
        local, epoch = _hub_clock(rig.dsn["a"])
        start = local + dt.timedelta(seconds=lead)
        hours = _window(start, dt.timedelta(hours=1))
        opens_at = epoch + lead - start.microsecond / 1e6  # the window starts on a second
        text = rig.config_path.read_text().replace('"00:00-00:01"', f'"{hours}"')
        rig.config_path.write_text(text)
        rig.start_bridge()
        rig.execute("a", "insert into items values (1, 'queued before the window')")
        until(lambda: state(rig) == f"paused: outside active_hours {hours}", lead - 2,
              "held outside active_hours")
        assert _count(rig, "b") == 0
        until(lambda: _count(rig, "b") == 1, lead + 10, "the row once the window opens")
        applied = rig.query("b", "select extract(epoch from min(applied_at))::float8 "
                                 "from sync.applied_batches")[0][0]
        print(f"active_hours: applied {applied - opens_at:.2f}s after the window opened")
        assert applied >= opens_at, "applied before the window opened"
        assert applied - opens_at < 2.0 + 3.0  # one heartbeat, and room for two cores
        until(lambda: state(rig) == "idle", 10, "idle inside the window")
    finally:
        rig.close()


def test_active_hours_that_include_now_flow(clusters, tmp_path):
    rig = _rig(clusters, tmp_path, hub_zone=FAR_ZONE, active_hours="00:00-00:01")
    try:
        local, _ = _hub_clock(rig.dsn["a"])
        hours = _window(local - dt.timedelta(hours=1), dt.timedelta(hours=2))
        text = rig.config_path.read_text().replace('"00:00-00:01"', f'"{hours}"')
        rig.config_path.write_text(text)
        rig.start_bridge()
        arrives(rig, 1)
        assert not state(rig).startswith("paused"), state(rig)
        assert rig.query("a", "select active_hours, active_zone from sync.link_control "
                              "where link = 'items'") == [(hours, FAR_ZONE)]
    finally:
        rig.close()


def _config(**options: Any) -> dict[str, Any]:
    return {"peers": {"a": {"dsn": "postgresql://x/a"}, "b": {"dsn": "postgresql://x/b"}},
            "links": [link("items", "items", ["id"], options.pop("direction", "a_to_b"),
                           **options)]}


@pytest.mark.parametrize(("hours", "why"), [
    ("25:00-06:00", "is not a window like"),
    ("22:00", "is not a window like"),
    ("10pm-6am", "is not a window like"),
    ("22:00-22:00", "starts where it ends"),
])
def test_active_hours_format_is_checked_at_config_load(hours, why):
    with pytest.raises(ConfigError) as e:
        parse(_config(active_hours=hours))
    assert str(e.value).startswith("link 'items': active_hours") and why in str(e.value)


def test_active_hours_accepts_a_window_past_midnight_and_seconds():
    assert parse(_config(active_hours="22:00 - 06:00")).links["items"].active_hours \
        == "22:00-06:00"
    assert parse(_config(active_hours="08:00:30-24:00")).links["items"].active_hours \
        == "08:00:30-24:00"


def test_the_window_check_in_sql_wraps_past_midnight(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")])
    now = rig.query("a", "select clock_timestamp() at time zone 'UTC'")[0][0]
    hour = dt.timedelta(hours=1)
    cases = {_window(now - hour, 2 * hour): True,  # around now (past midnight or not)
             f"{now + hour:%H:%M:%S}-{now - hour:%H:%M:%S}": False,  # the other 22 hours
             _window(now + hour, hour): False}
    for hours, inside in cases.items():
        assert rig.query("a", "select sync.in_active_hours(%s, 'UTC')", (hours,)) \
            == [(inside,)], hours


def test_ignoring_deletes_or_truncates_is_refused_on_two_way_links():
    for option in ({"deletes": "ignore"}, {"truncate": "ignore"}):
        with pytest.raises(ConfigError, match="refused on a two-way link"):
            parse(_config(direction="both", **option))
    assert parse(_config(direction="both", truncate="refuse")).links["items"].truncate \
        == "refuse"


# -- what to propagate ------------------------------------------------------------------


def test_deletes_ignore_keeps_deleted_rows_and_check_reports_missing_on_a(
        new_db, tmp_path, capsys):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b",
                                                   deletes="ignore")])
    try:
        rig.execute("a", "insert into items select g, 'v' from generate_series(1, 5) g")
        rig.start_bridge()
        until(lambda: _count(rig, "b") == 5, 20, "the rows on b")
        rig.execute("a", "delete from items where id = 2")
        rig.execute("a", "update items set v = 'changed' where id = 3")
        rig.execute("a", "insert into items values (6, 'new')")
        until(lambda: rig.query("b", "select v from items where id in (3, 6) order by id")
              == [("changed",), ("new",)], 20, "the update and the insert on b")
        until(lambda: _queue(rig) == (0, 0), 10, "the delete's signal consumed")
        assert rig.query("b", "select v from items where id = 2") == [("v",)], \
            "a row deleted at the source stays at the sink"
        capsys.readouterr()
        assert _cli(rig, "check", "items", "--json") == 1
        result = json.loads(capsys.readouterr().out)[0]
        assert (result["missing_on_a"], result["missing_on_b"], result["different"]) \
            == (1, 0, 0)
    finally:
        rig.close()


def test_truncate_refuse_fails_the_sources_truncate(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b",
                                                   truncate="refuse")])
    rig.execute("a", "insert into items values (1, 'kept')")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        rig.execute("a", "truncate items")
    assert "TRUNCATE of public.items is refused: syncbridge link items has truncate = " \
           "refuse" in str(e.value)
    assert _count(rig, "a") == 1
    assert rig.query("a", "select count(*) from sync.queue where op = 'T'") == [(0,)]


def test_truncate_ignore_is_not_propagated(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b",
                                                   truncate="ignore")])
    try:
        rig.execute("a", "insert into items select g, 'v' from generate_series(1, 3) g")
        rig.start_bridge()
        until(lambda: _count(rig, "b") == 3, 20, "the rows on b")
        rig.execute("a", "truncate items")
        rig.execute("a", "insert into items values (10, 'after')")
        until(lambda: _count(rig, "b") == 4, 20, "the row written after the truncate")
        assert _count(rig, "a") == 1
        assert rig.query("a", "select count(*) from sync.queue where op = 'T'") == [(0,)]
    finally:
        rig.close()


def test_truncate_propagates_as_truncate_unless_a_foreign_key_references_the_sink(
        new_db, tmp_path):
    """TRUNCATE gives the table a new file (DELETE keeps it): items has no foreign key
    pointing at it on b and is truncated; parents is referenced there and is deleted."""
    schema = SCHEMA + "create table parents (id int primary key);"
    rig = make_rig(new_db, tmp_path, schema, [
        link("items", "items", ["id"], "a_to_b"), link("parents", "parents", ["id"], "a_to_b"),
    ], schema_b=schema + "create table notes (id int primary key, "
                         "parent_id int references parents);")
    try:
        rig.execute("a", "insert into items select g, 'v' from generate_series(1, 3) g;"
                         "insert into parents select generate_series(1, 3)")
        rig.start_bridge()
        until(lambda: _count(rig, "b") == 3 and rig.query(
            "b", "select count(*) from parents") == [(3,)], 20, "the rows on b")
        files = "select pg_relation_filenode('items'), pg_relation_filenode('parents')"
        before = rig.query("b", files)[0]
        rig.execute("a", "truncate items; truncate parents")
        until(lambda: rig.query("b", "select (select count(*) from items) + "
                                     "(select count(*) from parents)") == [(0,)],
              20, "both sink tables emptied")
        after = rig.query("b", files)[0]
        assert after[0] != before[0], "items (no foreign key to it) is emptied by TRUNCATE"
        assert after[1] == before[1], "parents (referenced by notes) is emptied by DELETE"
    finally:
        rig.close()


# -- the CLI -------------------------------------------------------------------------------


def test_cli_pause_resume_set_rate_and_their_errors(new_db, tmp_path, capsys):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")])
    rig.execute("a", "insert into items values (1, 'queued')")  # sync.status has a row
    assert _cli(rig, "pause", "itemz") == cli.EXIT_ERROR
    assert "no link named 'itemz' in the config (did you mean 'items'?)" \
        in capsys.readouterr().err
    assert _cli(rig, "pause", "items", "--reason", "nightly load") == cli.EXIT_OK
    assert capsys.readouterr().out == "items: paused: nightly load\n"
    assert state(rig) == "paused: nightly load"
    assert _cli(rig, "set-rate", "items", "150") == cli.EXIT_OK
    assert capsys.readouterr().out == "items: rate limit 150 rows/s\n"
    assert status(rig)["rate_limit"] == 150
    with pytest.raises(SystemExit) as e:
        _cli(rig, "set-rate", "items", "-5")
    assert e.value.code == cli.EXIT_ERROR and "must be >= 0" in capsys.readouterr().err
    assert _cli(rig, "resume", "items") == cli.EXIT_OK
    assert capsys.readouterr().out == "items: resumed\n"
    assert state(rig) == "no bridge"
    assert _cli(rig, "set-rate", "items", "0") == cli.EXIT_OK
    assert capsys.readouterr().out == "items: rate limit unlimited\n"
    assert status(rig)["rate_limit"] is None
    assert _cli(rig, "pause", "items") == cli.EXIT_OK
    assert capsys.readouterr().out.startswith("items: paused: paused by ")
