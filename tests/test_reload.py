"""SIGHUP reloads the config without a restart: links added, removed and changed under
writes, the same process and hub session throughout; an invalid file is refused."""

from __future__ import annotations

import signal
import threading

import psycopg

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import Rig, toml_links, wait_until
from syncbridge.engine.hub.lease import link_key

TABLES = ("t1", "t2", "t3")
SCHEMA = "".join(f"create table {t} (id int primary key, v text);" for t in TABLES)
LINKS = {t: link(t, t, ["id"], "a_to_b", batch_size=25) for t in TABLES}


def _write_config(rig: Rig, names: list[str], **changes: dict) -> None:
    """The rig's config with only the links `names` (capture is installed for all),
    each with its `changes` (link name -> options)."""
    text = rig.config_path.read_text()
    head = text[:text.index("[[links]]")] if "[[links]]" in text else text
    rig.config_path.write_text(head + toml_links([{**LINKS[n], **changes.get(n, {})}
                                                  for n in names]))


def _reload(rig: Rig, event: str) -> str:
    """SIGHUP, then the log line of the next `event` (reloaded / reload_refused)."""
    seen = rig.log_text().count(f"event={event}")
    assert rig.proc is not None
    rig.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: rig.log_text().count(f"event={event}") > seen, 30, event)
    return [x for x in rig.log_text().splitlines() if f"event={event}" in x][seen]


def _writer(rig: Rig, stop: threading.Event, count: list[int]) -> None:
    """Inserts into every table, and updates an earlier row of each, until stopped."""
    with psycopg.connect(rig.dsn["a"], autocommit=True) as c:
        while not stop.is_set():
            n = count[0] = count[0] + 1
            for t in TABLES:
                c.execute(f"insert into {t} values (%s, %s)", (n, f"v{n}"))
                c.execute(f"update {t} set v = v || '+' where id = %s", (n // 2 + 1,))


def _synced(rig: Rig, table: str) -> bool:
    return rig.equal(table, ["id"]) and not rig.query(
        "a", "select 1 from sync.queue where link = %s limit 1", (table,))


def _advisory_locks(rig: Rig) -> int:
    """The link-set (coordinator) locks granted on the hub; the per-link locks a bridge
    holds for the links it drains (engine/hub/lease.py link_key) are not counted, nor the
    two-key wake locks of its LISTEN connection (engine/postgres/capture.py wake_lock)."""
    return rig.query("a", "select count(*) from pg_locks l where locktype = 'advisory' "
                          "and granted and l.objsubid = 1 "
                          "and (l.classid::bigint << 32) | l.objid::bigint "
                          "<> all (select hashtext(k)::bigint from unnest(%s::text[]) k)",
                     ([link_key(t) for t in TABLES],))[0][0]


def test_reload_adds_removes_and_re_adds_links_under_writes(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, list(LINKS.values()))  # capture on all three
    _write_config(rig, ["t1", "t2"])
    stop, count = threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(rig, stop, count))
    try:
        bridge = rig.start_bridge()
        wait_until(lambda: "event=active" in rig.log_text(), 30, "the bridge to lead")
        writer.start()
        wait_until(lambda: rig.query("b", "select count(*) from t2")[0][0] > 20, 30, "t2 rows")
        _write_config(rig, ["t1", "t3"])  # remove t2, add t3 (its signals queued meanwhile)
        line = _reload(rig, "reloaded")
        assert "added=t3 removed=t2 changed=-" in line
        at_reload = count[0]
        wait_until(lambda: rig.query("b", "select count(*) from t3")[0][0] > at_reload, 30,
                   "t3 to flow")
        # t2 is not drained any more: its signals stay queued on a
        assert rig.query("a", "select count(*) from sync.queue where link = 't2'")[0][0] > 0
        # the new link set's lock is held too: a bridge started with the new file stands by
        rig.start_bridge()
        wait_until(lambda: "event=standby" in rig.log_text(), 30, "the second bridge")
        assert rig.stop_bridge() == 0
        rig.proc = bridge
        assert _advisory_locks(rig) == 2  # {t1,t2} and {t1,t3}: both kept by one session
        _write_config(rig, ["t1", "t2", "t3"], t1={"batch_size": 7})
        assert "added=t2 removed=- changed=t1" in _reload(rig, "reloaded")
        wait_until(lambda: count[0] > at_reload + 50, 30, "more writes")
        stop.set()
        writer.join(30)
        for t in TABLES:
            wait_until(lambda t=t: _synced(rig, t), 60, f"{t} to converge")
        assert rig.query("b", "select count(*) from t1")[0][0] == count[0]
        assert bridge.poll() is None and bridge.pid == rig.proc.pid  # never restarted
        log = rig.log_text()
        assert f":{bridge.pid}:" not in "".join(x for x in log.splitlines()
                                                if "event=stopped" in x)
        # each term ended gracefully: no batch was left claimed for the next term
        assert "batches=" not in log, "a batch in flight was cut off by a reload"
        assert rig.stop_bridge() == 0
    finally:
        stop.set()
        rig.close()


def test_an_invalid_reload_is_refused_and_the_old_config_kept(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [LINKS["t1"]])
    good = rig.config_path.read_text()
    try:
        rig.start_bridge()
        wait_until(lambda: "event=active" in rig.log_text(), 30, "the bridge to lead")
        bad_table = {**LINKS["t2"], "a": {"peer": "a", "table": "nosuch"}}
        cases = [
            (good + "\n[[links]\n", "is not valid TOML"),
            (good.replace("[bridge]\n", "[bridge]\npoll_intervall = 1\n"), "poll_intervall"),
            (good + toml_links([bad_table]), "nosuch"),
            (good.replace('hub = "a"', 'hub = "b"'), "the hub changed"),
        ]
        for n, (text, reason) in enumerate(cases):
            rig.config_path.write_text(text)
            line = _reload(rig, "reload_refused")
            assert reason in line and "level=ERROR" in line, line
            rig.execute("a", "insert into t1 values (%s, 'still draining')", (n,))
            wait_until(lambda: _synced(rig, "t1"), 30, "t1 to keep flowing")
        assert "event=reloaded" not in rig.log_text()
        rig.config_path.write_text(good)
        assert "added=- removed=- changed=- settings=same" in _reload(rig, "reloaded")
        assert rig.proc is not None and rig.proc.poll() is None
        assert rig.stop_bridge() == 0
    finally:
        rig.close()



def test_a_standby_that_reloads_first_does_not_lead_beside_the_active_bridge(new_db,
                                                                               tmp_path):
    """A standby reloaded to a new link set before the active bridge must not lead
    on the new set's free lock: it takes every lock of the link sets it ran, or none."""
    rig = make_rig(new_db, tmp_path, SCHEMA, list(LINKS.values()), {"heartbeat_interval": 0.5})
    _write_config(rig, ["t1"])
    try:
        active = rig.start_bridge()
        wait_until(lambda: "event=active" in rig.log_text(), 30, "the bridge to lead")
        standby = rig.start_bridge()
        wait_until(lambda: "event=standby" in rig.log_text(), 30, "the standby")
        _write_config(rig, ["t1", "t2"])
        assert "added=t2" in _reload(rig, "reloaded")  # rig.proc is the standby
        rig.execute("a", "insert into t2 values (1, 'queued')")
        beat = "select max(heartbeat) from sync.bridges where role = 'standby'"
        for _ in range(2):  # a heartbeat comes after each attempt to take the locks
            last = rig.query("a", beat)[0][0]
            wait_until(lambda t=last: rig.query("a", beat)[0][0] > t, 30, "a standby beat")
        assert _advisory_locks(rig) == 1, "the standby holds a lock"
        assert rig.query("b", "select count(*) from t2") == [(0,)]
        active.kill()
        active.wait(10)
        wait_until(lambda: rig.log_text().count("event=active") == 2, 30, "the standby to lead")
        assert "links=2" in [x for x in rig.log_text().splitlines() if "event=active" in x][1]
        wait_until(lambda: _synced(rig, "t2"), 30, "t2 from the reloaded standby")
        assert standby.poll() is None
        assert rig.stop_bridge() == 0
    finally:
        rig.close()


def test_a_reload_to_a_link_set_another_bridge_leads_is_refused(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, list(LINKS.values()))
    _write_config(rig, ["t1"])
    try:
        first = rig.start_bridge()
        wait_until(lambda: rig.log_text().count("event=active") == 1, 30, "the first bridge")
        _write_config(rig, ["t1", "t2"])  # a second bridge leads this set (its own lock)
        rig.start_bridge()
        wait_until(lambda: rig.log_text().count("event=active") == 2, 30, "the second bridge")
        rig.proc, second = first, rig.proc
        line = _reload(rig, "reload_refused")
        assert "another bridge holds the leadership lock of the new set of links" in line
        rig.execute("a", "insert into t1 values (1, 'the first bridge keeps t1')")
        wait_until(lambda: _synced(rig, "t1"), 30, "t1")
        assert "event=reloaded" not in rig.log_text()
        assert rig.stop_bridge() == 0
        rig.proc = second
        assert rig.stop_bridge() == 0
    finally:
        rig.close()


def test_a_link_is_changed_by_its_own_options_the_defaults_it_takes_and_its_peers():
    from syncbridge.bridge.reload import changed_links
    from syncbridge.engine.config import parse

    def config(bridge: dict | None = None, dsn_b: str = "postgresql://h/b", **opts: object):
        return parse({"bridge": bridge or {},
                      "peers": {"a": {"dialect": "postgres", "dsn": "postgresql://h/a"},
                                "b": {"dialect": "postgres", "dsn": dsn_b}},
                      "links": [{**LINKS["t1"], **opts}, LINKS["t2"]]})

    before = config()
    assert changed_links(before, config()) == []
    assert changed_links(before, config(batch_size=7)) == ["t1"]
    assert changed_links(before, config({"batch_size": 9})) == []  # both set their own
    assert changed_links(before, config({"notify": False})) == ["t1", "t2"]
    assert changed_links(before, config(dsn_b="postgresql://elsewhere/b")) == ["t1", "t2"]
