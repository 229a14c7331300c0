"""The log an operator keeps: no row values ever, keys hashed on request, one line per event.

A real bridge process runs through the events that used to print rows: a row
the sink rejects (CHECK: Postgres's DETAIL is "Failing row contains (...)"), a
row that breaks a unique index (DETAIL "Key (phone)=(...) already exists"), a
deferred foreign key, and a conflict on a two-way link. Every line of its log
is then scanned for every value the test wrote.
"""

from __future__ import annotations

import json
import re

from rigs import link, make_rig
from syncbridge.bridge.bench.rig import wait_until

SCHEMA = """
create table patients (id text primary key, full_name text, phone text);
create table visits (id text primary key, patient_id text references patients, note text);
"""
SINK_EXTRA = """
alter table patients add constraint short_names check (length(full_name) < 20);
create unique index patients_phone on patients (phone);
"""
# Distinctive values: none of them can appear in a log line by accident.
KEYS = ["PK-ZEBRA-0001", "PK-ZEBRA-0002", "PK-ZEBRA-0003", "PK-ZEBRA-0004", "VISIT-ZEBRA-9"]
VALUES = ["Wilhelmina Featherstonehaugh-Smythe", "+44-7700-900123", "+44-7700-900456",
          "Quentin Ashdown", "Rosalind Bright", "Ottoline March",
          "note-zebra-confidential"]


def _scan(text: str, forbidden: list[str]) -> list[str]:
    return [f"{v!r} in: {line}" for line in text.splitlines() for v in forbidden if v in line]


def test_no_value_written_by_the_test_appears_in_any_log_line(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [
        link("patients", "patients", ["id"], "both"),
        link("visits", "visits", ["id"], "a_to_b"),
    ], settings={"log_keys": False, "max_attempts": 2}, schema_b=SCHEMA + SINK_EXTRA)
    try:
        # a conflict: both sides change the same row while no bridge runs
        rig.execute("a", "insert into patients values (%s, %s, %s)",
                    (KEYS[3], "Quentin Ashdown", "+44-0000"))
        rig.execute("b", "insert into patients values (%s, %s, %s)",
                    (KEYS[3], "Rosalind Bright", "+44-1111"))
        rig.start_bridge()
        # rejected by the CHECK on b (DETAIL: Failing row contains (...))
        rig.execute("a", "insert into patients values (%s, %s, %s)",
                    (KEYS[0], VALUES[0], VALUES[1]))
        # breaks the unique phone index on b (DETAIL: Key (phone)=(...) already exists)
        rig.execute("b", "insert into patients values (%s, %s, %s)",
                    (KEYS[1], "Ottoline March", VALUES[2]))
        rig.execute("a", "insert into patients values (%s, %s, %s)", (KEYS[2], "Ann", VALUES[2]))
        # a visit whose patient never reaches b: deferred, then dead-lettered
        rig.execute("a", "insert into visits values (%s, %s, %s)",
                    (KEYS[4], KEYS[0], VALUES[6]))
        wait_until(lambda: len(rig.query("a", "select 1 from sync.dead_letter")) >= 3, 60,
                   "three dead letters (check, unique, foreign key)")
        wait_until(lambda: "event=conflict" in rig.log_text(), 30, "the conflict to be logged")
        rig.stop_bridge()
        log = rig.log_text()
        assert "event=row_dead" in log and "event=row_deferred" in log
        assert _scan(log, KEYS + VALUES) == []
        # the dead letters still carry the detail: that is where values may go
        errors = " ".join(r[0] for r in rig.query("a", "select error from sync.dead_letter"))
        assert "Failing row contains" in errors
        # keys are logged as a stable hash, so one row's lines can still be found
        hashes = re.findall(r"key=(h:[0-9a-f]{12})", log)
        assert hashes and all(h.startswith("h:") for h in hashes)
        # conflicts and dead letters are warnings; every event is one line
        assert re.search(r"level=WARNING .*event=conflict ", log)
        assert re.search(r"level=WARNING .*event=row_dead ", log)
        assert all(line.startswith("ts=") for line in log.splitlines() if line.strip())
        assert "Traceback" not in log
    finally:
        rig.close()


def test_keys_are_logged_as_they_are_by_default(new_db, tmp_path):
    sink = "create table items (id text primary key, v text check (v <> 'bad-zebra'));"
    rig = make_rig(new_db, tmp_path, "create table items (id text primary key, v text);",
                   [link("items", "items", ["id"], "a_to_b")], schema_b=sink)
    try:
        rig.start_bridge()
        rig.execute("a", "insert into items values ('KEY-ZEBRA-7', 'bad-zebra')")
        # the row_dead line is logged during the apply, the dead letter stored after the
        # sink commits: wait for the stored one (was: read it as soon as the line appeared)
        wait_until(lambda: rig.query("a", "select count(*) from sync.dead_letter") == [(1,)],
                   60, "the dead letter")
        line = next(x for x in rig.log_text().splitlines() if "event=row_dead" in x)
        assert "KEY-ZEBRA-7" in line and "bad-zebra" not in line
        assert json.loads(rig.query("a", "select key::text from sync.dead_letter")[0][0]) == {
            "id": "KEY-ZEBRA-7"}
    finally:
        rig.close()


def test_tracebacks_only_at_debug_and_every_event_is_one_line(capsys):
    import logging

    from syncbridge.bridge import logs

    def emit() -> str:
        try:
            raise ConnectionError("server closed the connection\nunexpectedly")
        except ConnectionError:
            logging.getLogger("syncbridge.test").warning("event=hub_unavailable", exc_info=True)
        return capsys.readouterr().err

    try:
        logs.setup("info")
        [line] = emit().splitlines()
        assert line.endswith("event=hub_unavailable error=ConnectionError: server closed the "
                             "connection unexpectedly")
        logs.setup("info", "json")
        [line] = emit().splitlines()
        assert json.loads(line)["error"] == ("ConnectionError: server closed the connection "
                                             "unexpectedly")
        logs.setup("debug")
        assert "Traceback (most recent call last)" in emit()
    finally:
        logging.getLogger().handlers[:] = []
