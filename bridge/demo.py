"""`syncbridge demo`: a clinic and a portal database kept in step, honestly.

Starts an embedded PostgreSQL, creates two databases with the same small
schema, installs capture, runs the bridge as a real process, writes on both
sides (inserts, updates, deletes, a key change, a TRUNCATE), then compares
every table and prints sync.status. Exits 1 if any table differs. It also
edits one patient on both sides while the bridge is down, to show a conflict
resolved by the link's policy (a_wins), and removes its temporary directory
at the end (`--keep` leaves it, and the server, and says where). Patients
that the portal held before the link existed are sent by `syncbridge backfill`,
and `syncbridge check` must find every link equal at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from syncbridge.bridge.bench.rig import Rig
from syncbridge.engine import sqlfiles, status
from syncbridge.engine.embedded import EmbeddedPostgres

SQL = sqlfiles.Queries("demo/demo.sql")

LINKS = [
    {"name": "patients", "a": {"peer": "a", "table": "patients"},
     "b": {"peer": "b", "table": "patients"}, "key": ["id"], "direction": "both"},
    {"name": "appointments", "a": {"peer": "a", "table": "appointments"},
     "b": {"peer": "b", "table": "appointments"}, "key": ["clinic_code", "slot_no"],
     "direction": "both"},
    {"name": "audit_notes", "a": {"peer": "a", "table": "audit_notes"},
     "b": {"peer": "b", "table": "audit_notes"}, "key": ["id"], "direction": "a_to_b"},
]
TABLES = {"patients": ["id"], "appointments": ["clinic_code", "slot_no"], "audit_notes": ["id"]}

P1, P2, P3 = ("0b9c1e5e-3f1a-4c2e-9a51-000000000001", "0b9c1e5e-3f1a-4c2e-9a51-000000000002",
              "0b9c1e5e-3f1a-4c2e-9a51-000000000003")

PORTAL_WRITES = [
    SQL["portal_patients"],
    SQL["portal_appointments"],
    "insert into audit_notes (id, body) select g, 'note ' || g from generate_series(1, 50) g",
]
CLINIC_WRITES = [
    f"insert into patients (id, mrn, full_name, balance) "
    f"values ('{P3}', 'MRN-003', 'Ola Nordmann', 0)",
    f"update patients set balance = balance + 0.01, allergies = '{{}}' where id = '{P1}'",
    "update appointments set slot_no = 7 where clinic_code = 'NORTH' and slot_no = 2",  # key change
]
PORTAL_MORE = [
    f"delete from patients where id = '{P2}'",  # cascades to its appointment on both sides
    "truncate audit_notes",
    "insert into audit_notes (id, body) values (1000, 'after truncate')",
]


def _say(msg: str) -> None:
    print(msg, flush=True)


def create_databases(admin_dsn: str, names: list[str]) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        for n in names:
            c.execute(f'drop database if exists "{n}" with (force)')
            c.execute(f'create database "{n}"')


def run(rig: Rig) -> bool:
    for side in ("a", "b"):
        rig.execute(side, SQL["schema"])
    rig.execute("a", SQL["legacy"])
    for line in rig.setup():
        _say("  " + line)
    rig.start_bridge()
    _backfill(rig)
    _say("bridge started; writing on the portal (a) and the clinic (b) ...")
    for stmt in PORTAL_WRITES:
        rig.execute("a", stmt)
    rig.wait_equal(TABLES, 30)
    for stmt in CLINIC_WRITES:
        rig.execute("b", stmt)
    rig.wait_equal(TABLES, 30)
    slots = rig.query("a", "select slot_no from appointments order by slot_no")
    _say(f"  key change on the clinic (slot 2 -> 7): portal slots now {[s for (s,) in slots]}")
    for stmt in PORTAL_MORE:
        rig.execute("a", stmt)
    started = time.monotonic()
    try:
        rig.wait_equal(TABLES, 30)
        rig.wait_drained(30)
    except TimeoutError as e:
        _say(f"NOT CONVERGED: {e}")
        return False
    _say(f"converged {time.monotonic() - started:.2f}s after the last write")
    notes = rig.query("b", "select id from audit_notes order by id")
    _say(f"  TRUNCATE on the portal: clinic audit_notes now holds ids {[i for (i,) in notes]}")
    if not _conflict(rig):
        return False
    check = subprocess.run([sys.executable, "-m", "syncbridge.bridge.cli", "--config",
                            str(rig.config_path), "check"], capture_output=True, text=True,
                           timeout=120)
    _say("$ syncbridge check\n  " + "\n  ".join((check.stdout or check.stderr).splitlines()))
    if check.returncode != 0:
        return False
    time.sleep(1.2)  # one stats interval, so the status sample below is current
    return True


def _conflict(rig: Rig) -> bool:
    """Both sides edit one patient while the bridge is down: a conflict, a_wins."""
    rig.stop_bridge()
    rig.execute("a", f"update patients set full_name = 'Ola (portal edit)' where id = '{P3}'")
    rig.execute("b", f"update patients set full_name = 'Ola (clinic edit)' where id = '{P3}'")
    rig.start_bridge()
    try:
        rig.wait_equal(TABLES, 30)
    except TimeoutError as e:
        _say(f"NOT CONVERGED after the conflict: {e}")
        return False
    [(name,)] = rig.query("b", f"select full_name from patients where id = '{P3}'")
    found = rig.query("a", "select link, policy, winner from sync.conflicts")
    _say(f"  conflict (both sides edited one patient): sync.conflicts {found}; "
         f"both now say {name!r}")
    return bool(found) and name == "Ola (portal edit)"


def _backfill(rig: Rig) -> None:
    """Run `syncbridge backfill patients` as an operator would, then wait for the rows."""
    cmd = [sys.executable, "-m", "syncbridge.bridge.cli", "--config", str(rig.config_path),
           "backfill", "patients", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    _say("$ syncbridge backfill patients\n  " + (out.stdout or out.stderr).strip())
    rig.wait_equal({"patients": ["id"]}, 30)
    _say(f"  clinic now holds {len(rig.rows('b', 'patients', ['id']))} pre-existing patients")


def main(keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="syncbridge-demo-"))
    _say(f"starting embedded PostgreSQL in {workdir} ...")
    pg = EmbeddedPostgres(workdir / "pg").start()
    rig = None
    try:
        create_databases(pg.dsn(), ["portal", "clinic"])
        rig = Rig(workdir, pg.dsn("portal"), pg.dsn("clinic"), LINKS)
        ok = run(rig)
        rig.stop_bridge()
        for table, key in TABLES.items():
            same = rig.equal(table, key)
            ok = ok and same
            _say(f"  {table:<13} {len(rig.rows('a', table, key)):>3} rows  "
                 f"{'equal' if same else 'DIFFERENT'}")
        _say("\nselect * from sync.status;\n" + status.render(rig.dsn["a"]))
        _say("\ndemo " + ("passed: both databases hold the same rows" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        if rig is not None:
            rig.close()
        if keep:
            _say(f"embedded server left running: {pg.dsn('portal')}; its files, the config "
                 f"and the bridge log are in {workdir} (remove it when done)")
        else:
            pg.destroy()
            shutil.rmtree(workdir, ignore_errors=True)
            _say(f"removed {workdir}")


if __name__ == "__main__":
    sys.exit(main())
