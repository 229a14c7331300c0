"""Is a SQL Server peer ready for the bridge? Read-only checks, each with its fix.

Used three ways: `syncbridge install` refuses to alter a database that cannot
work (compatibility level, read-only replica), every SQL Server drain checks
its peer once at start so a misconfiguration stops it with the statement that
fixes it instead of failing on its first batch, and `syncbridge doctor`
prints every finding. Nothing here writes.

Facts (learn.microsoft.com): OPENJSON needs compatibility level 130
(openjson-transact-sql); change tracking reads need snapshot isolation
(reference §1.4, Msg 3952); DATABASEPROPERTYEX(..., 'Updateability') is
READ_ONLY on a readable secondary; HAS_PERMS_BY_NAME(securable, class,
permission) returns the login's effective permission (1/0, NULL if the
securable does not exist); a change retention shorter than the longest outage
forces a resync (§1.1; SQL Server's default is 2 days).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from syncbridge.engine.config import Side
from syncbridge.engine.sqlserver import sql as tsql

ERROR, WARNING = "error", "warning"
UNIT_DAYS = {"DAYS": 1.0, "HOURS": 1 / 24, "MINUTES": 1 / 1440}


@dataclass(frozen=True)
class Finding:
    level: str  # ERROR stops install/run; WARNING is printed and logged
    what: str
    fix: str  # the exact statement (or action) that fixes it


@dataclass(frozen=True)
class Role:
    """What the bridge does with one table of this peer."""

    side: Side
    source: bool  # change tracking is read from it
    sink: bool  # the bridge writes it
    identity: bool = False  # an IDENTITY column is written (SET IDENTITY_INSERT needs ALTER)


def _stmt(r: tsql.Rendered) -> str:
    """A rendered statement without its header comment, to print as a fix."""
    return "\n".join(line for line in r.sql.splitlines() if not line.startswith("--")).strip()


def _one(cur: Any, name: str, *params: Any) -> Any:
    row = cur.execute(tsql.static(name).sql, *params).fetchone()
    return row[0] if row else None


def database(cur: Any, *, source: bool, retention_days: float) -> list[Finding]:
    """Compatibility level, updateability, and for a source snapshot isolation and CT."""
    out: list[Finding] = []
    name = _one(cur, "db_name")
    db = tsql.qi(name)
    compat = _one(cur, "db_compat")
    if compat is not None and compat < tsql.MIN_COMPAT_LEVEL:
        out.append(Finding(
            ERROR, f"database {db} is at compatibility level {compat}; the apply batch's "
            f"OPENJSON needs {tsql.MIN_COMPAT_LEVEL} or higher",
            f"ALTER DATABASE {db} SET COMPATIBILITY_LEVEL = {tsql.MIN_COMPAT_LEVEL};"))
    updateable = _one(cur, "db_updateability")
    if updateable is not None and updateable != "READ_WRITE":
        out.append(Finding(
            ERROR, f"database {db} is {updateable} here (a readable secondary or a read-only "
            "database): the bridge must talk to the writable primary",
            "point the peer's dsn at the primary (or the availability group listener with "
            "ApplicationIntent=ReadWrite)"))
    if not source:
        return out
    if _one(cur, "db_snapshot_state") != "ON":
        out.append(Finding(ERROR, f"snapshot isolation is not allowed on {db} (Msg 3952 on "
                           "the first change read)", _stmt(tsql.enable_db_snapshot(name))))
    row = cur.execute(tsql.static("db_ct_state").sql).fetchone()
    want = max(1, round(retention_days))
    if row is None and _one(cur, "db_ct_version") is not None:
        # On, but this login cannot see sys.change_tracking_databases (reference §1.1 note)
        out.append(Finding(
            WARNING, f"change tracking is on for {db} but this login cannot see its retention",
            "GRANT VIEW ANY DATABASE TO [<login>]; (server level), or let a DBA run doctor"))
    elif row is None:
        out.append(Finding(
            ERROR, f"change tracking is off for {db} (or the login lacks VIEW DATABASE STATE "
            "to see it)", _stmt(tsql.enable_db_ct(name, want))))
    else:
        auto, period, unit = row[0], row[1], str(row[2]).upper()
        days = period * UNIT_DAYS.get(unit, 1.0)
        if days < retention_days:
            out.append(Finding(
                WARNING, f"change retention of {db} is {period} {unit}, shorter than the "
                f"configured {retention_days:g} days: an outage longer than that forces a "
                "full resync", _stmt(tsql.set_db_retention(name, want))))
        if not auto:
            out.append(Finding(
                WARNING, f"AUTO_CLEANUP is off on {db}: change tracking data grows forever",
                f"ALTER DATABASE {db} SET CHANGE_TRACKING (AUTO_CLEANUP = ON);"))
    return out


def tables(cur: Any, roles: Iterable[Role], user: str | None) -> list[Finding]:
    """Per table: primary key and change tracking (sources), then the login's grants."""
    out: list[Finding] = []
    who = tsql.qi(user) if user else "[<bridge user>]"
    for r in roles:
        obj = tsql.side_name(r.side)
        if r.source:
            if cur.execute(tsql.static("table_pk").sql, obj).fetchone() is None:
                out.append(Finding(ERROR, f"{obj} has no primary key; change tracking needs one",
                                   f"ALTER TABLE {obj} ADD CONSTRAINT "
                                   f"{tsql.qi(r.side.table + '_pk')} PRIMARY KEY (<key columns>);"))
            elif cur.execute(tsql.static("table_ct_state").sql, obj).fetchone() is None:
                out.append(Finding(ERROR, f"change tracking is off for {obj}",
                                   _stmt(tsql.enable_table_ct(r.side))))
        missing = [p for p in required(r) if _one(cur, "has_perms", obj, p) != 1]
        if missing:
            out.append(Finding(ERROR, f"the login lacks {', '.join(missing)} on {obj}",
                               f"GRANT {', '.join(missing)} ON OBJECT::{obj} TO {who};"))
        for table, perms in bookkeeping(r):
            got = {p: _one(cur, "has_perms", table, p) for p in perms}
            if all(v is None for v in got.values()):  # NULL: no such object
                out.append(Finding(ERROR, f"{table} does not exist (the bridge's objects are "
                                   "not there yet, or are older)", "syncbridge migrate"))
                continue
            lacking = [p for p, v in got.items() if v != 1]
            if lacking:
                out.append(Finding(ERROR, f"the login lacks {', '.join(lacking)} on {table}",
                                   f"GRANT {', '.join(lacking)} ON OBJECT::{table} TO {who};"))
    return out


def required(r: Role) -> list[str]:
    """Least privilege on the linked table itself (docs/sqlserver.md lists the same)."""
    perms: list[str] = []
    if r.source:
        perms += ["SELECT", "VIEW CHANGE TRACKING"]
    if r.sink:
        perms += [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE") if p not in perms]
        if r.identity:
            perms.append("ALTER")  # SET IDENTITY_INSERT (reference §3)
    return perms


def bookkeeping(r: Role) -> list[tuple[str, list[str]]]:
    """Least privilege on the bridge's own [sync] tables for this role."""
    out: list[tuple[str, list[str]]] = []
    if r.source:
        out += [("[sync].[db_identity]", ["SELECT"]),
                ("[sync].[ct_client]", ["SELECT", "INSERT", "UPDATE"])]
    if r.sink:
        out.append(("[sync].[applied_batches]", ["SELECT", "INSERT", "DELETE"]))
    if r.source and r.sink:  # a two-way link: bases and resends (migration 0003)
        out += [("[sync].[row_state]", ["SELECT", "INSERT", "UPDATE", "DELETE"]),
                ("[sync].[resend]", ["SELECT", "INSERT", "DELETE"])]
    return out


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == ERROR]


def render(findings: Iterable[Finding]) -> str:
    return "\n".join(f"{f.level}: {f.what}\n  fix: {f.fix}" for f in findings)
