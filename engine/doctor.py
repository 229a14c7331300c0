"""`syncbridge doctor`: is every peer ready? Read-only; each problem with its fix.

Run before `migrate` / `install` on a customer's machine: SQL Server problems
otherwise surface only on the first batch. For each peer it connects once,
reads, and prints findings; nothing is created, altered or granted (Postgres
connections are read-only transactions; SQL Server ones send only SELECTs).
Exit 0 when there is no error (warnings are printed but do not block).

SQL Server: ODBC driver and its version, TLS settings of the connection
string, compatibility level, writable primary, snapshot isolation, change
tracking (database with retention, tables), the login's grants, collation and
trailing spaces of text keys, clock skew. Postgres: server version, CREATE on
the database for the sync schema, the privileges reads and applies need,
whether capture is installed (and, where not, whether this user may install
it: TRIGGER), max_connections headroom. wal_level does not matter:
capture is trigger-based, no logical decoding.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.config import Config, Peer, Side
from syncbridge.engine.postgres import capture as pg_capture

if TYPE_CHECKING:
    import psycopg

ERROR, WARNING, OK = "error", "warning", "ok"
PG_MIN_VERSION = 150000  # the oldest the README claims and CI tests (.ci/pg-oldest)
# Connections the bridge opens per Postgres peer: an asyncpg pool of up to 4
# (bridge/daemon.py), one LISTEN connection, and one for migrate/status at the same time.
PG_CONNECTIONS_NEEDED = 6
MAX_CLOCK_SKEW = 5.0  # seconds between the bridge host and a SQL Server
SQL_DRIVER_VER = 7  # ODBC SQLGetInfo InfoType (sql.h)
SQL = sqlfiles.Queries("postgres/doctor.sql")


@dataclass(frozen=True)
class Check:
    peer: str
    level: str
    what: str
    fix: str = ""


@dataclass
class _Use:
    source: bool = False
    sink: bool = False
    triggers: list[str] = field(default_factory=list)  # capture triggers install creates


def uses(config: Config) -> dict[str, dict[Side, _Use]]:
    """peer -> side -> what the configured links do with that table."""
    out: dict[str, dict[Side, _Use]] = {}
    for link in config.links.values():
        for src, dst in link.directions():
            for label, role in ((src, "source"), (dst, "sink")):
                side = link.side(label)
                use = out.setdefault(side.peer, {}).setdefault(side, _Use())
                setattr(use, role, True)
                if role == "source" and config.peers[side.peer].dialect != "sqlserver":
                    use.triggers += pg_capture.trigger_names(link, label)
    return out


def run(config: Config) -> Iterator[Check]:
    """Every finding, peer by peer; a peer that cannot be reached is one error."""
    roles = uses(config)
    for name, peer in config.peers.items():
        sides = roles.get(name, {})
        try:
            if peer.dialect == "sqlserver":
                yield from _sqlserver(config, peer, sides)
            else:
                yield from _postgres(peer, sides)
        except Exception as e:
            if not _peer_error(e):
                raise  # a bug in doctor itself, not a finding about the peer
            yield Check(name, ERROR, f"cannot check this peer: {type(e).__name__}: "
                        f"{_safe(str(e))}", "fix the dsn / network / login / driver, then run "
                        "doctor again")


def report(config: Config, out: Iterator[Check] | None = None) -> tuple[int, list[str]]:
    """(exit code, lines): 0 when no check is an error."""
    lines: list[str] = []
    failed = False
    for c in out if out is not None else run(config):
        failed |= c.level == ERROR
        lines.append(f"{c.peer}: {c.level}: {c.what}")
        if c.fix:
            lines.append(f"    fix: {c.fix}")
    lines.append("ready" if not failed else "not ready: fix the errors above")
    return (1 if failed else 0), lines


# --- SQL Server ------------------------------------------------------------------------------


def tls_checks(peer: str, conn_str: str) -> list[Check]:
    """Encrypt / TrustServerCertificate as the connection string sets them (ODBC 18:
    Encrypt defaults to yes and the certificate is validated, reference §4)."""
    opts = {k.strip().lower(): v.strip().strip("{}").lower()
            for k, _, v in (p.partition("=") for p in conn_str.split(";") if "=" in p)}
    out = []
    if opts.get("encrypt") in ("no", "false", "optional"):
        out.append(Check(peer, WARNING, "Encrypt=no: patient data crosses the network in clear",
                         "set Encrypt=yes in the peer's dsn (and give the server a certificate)"))
    if opts.get("trustservercertificate") in ("yes", "true"):
        out.append(Check(peer, WARNING, "TrustServerCertificate=yes: the server's certificate "
                         "is not validated (fine for a test container, not for production)",
                         "install the server's CA on the bridge host and drop "
                         "TrustServerCertificate from the dsn"))
    return out


def _sqlserver(config: Config, peer: Peer, sides: dict[Side, _Use]) -> Iterator[Check]:
    from syncbridge.engine.sqlserver import capture, checks
    from syncbridge.engine.sqlserver import connection as mp
    from syncbridge.engine.sqlserver import sql as tsql

    conn_str = mp.with_app_name(mp.odbc_connection_string(peer.dsn))
    pyodbc = mp.import_pyodbc()
    mp.check_driver(pyodbc, conn_str)
    yield from tls_checks(peer.name, conn_str)
    timeouts = mp.Timeouts(config.setting("mssql_login_timeout"),
                           config.setting("mssql_query_timeout"),
                           config.setting("mssql_lock_timeout"))
    cn = mp.connect(pyodbc, conn_str, True, timeouts)
    try:
        cur = cn.cursor()
        version, server_now, user = cur.execute(tsql.static("server_facts").sql).fetchone()
        driver = mp.odbc_driver(conn_str) or "(DSN)"
        yield Check(peer.name, OK, f"SQL Server {version}; ODBC driver {driver} "
                    f"{cn.getinfo(SQL_DRIVER_VER)}; database user {user}")
        skew = abs((dt.datetime.now(dt.UTC).replace(tzinfo=None) - server_now).total_seconds())
        if skew > MAX_CLOCK_SKEW:
            yield Check(peer.name, WARNING, f"the server's clock is {skew:.0f} s off this host's",
                        "run NTP (chrony / w32time) on both machines")
        found = checks.database(cur, source=any(u.source for u in sides.values()),
                                retention_days=config.setting("ct_retention_days"))
        roles = []
        for side, use in sides.items():
            table, meta = capture.read_catalog(cur, side)
            if table is None:
                found.append(checks.Finding(ERROR, f"table {side.qualified} does not exist",
                                            "create it (or fix the link's table name)"))
                continue
            roles.append(checks.Role(side, use.source, use.sink, bool(meta.identity)))
            if use.sink:
                found += capture.key_warnings(table, meta)
        found += checks.tables(cur, roles, user)
    finally:
        cn.close()
    for f in found:
        yield Check(peer.name, f.level, f.what, f.fix)


# --- Postgres --------------------------------------------------------------------------------


def _pg_ident(*names: str) -> str:
    """A (qualified) name quoted as Postgres reads it, for the GRANT a check suggests."""
    return sql.Identifier(*names).as_string(None)


def _postgres(peer: Peer, sides: dict[Side, _Use]) -> Iterator[Check]:
    import psycopg

    with psycopg.connect(peer.dsn) as conn:
        conn.read_only = True
        row = conn.execute(SQL["server_facts"]).fetchone()
        num, version, user, db, max_conn, used, reserved, can_create, has_sync, temp = row
        who = _pg_ident(user)
        yield Check(peer.name, OK, f"PostgreSQL {version}; user {user}; wal_level does not "
                    "matter (trigger capture, no logical decoding)")
        if num < PG_MIN_VERSION:
            yield Check(peer.name, ERROR, f"PostgreSQL {version} is older than 15, the oldest "
                        "syncbridge is tested on", "upgrade the server to 15 or later")
        free = max_conn - reserved - used
        if free < PG_CONNECTIONS_NEEDED:
            yield Check(peer.name, WARNING, f"only {free} of {max_conn} connections are free; "
                        f"the bridge needs {PG_CONNECTIONS_NEEDED}",
                        f"ALTER SYSTEM SET max_connections = {max_conn + PG_CONNECTIONS_NEEDED};"
                        " (then restart the server), or lower other clients' pools")
        if not has_sync and not can_create:
            yield Check(peer.name, ERROR, f"no sync schema yet and {user} may not create one",
                        f"GRANT CREATE ON DATABASE {_pg_ident(db)} TO {who};")
        if not temp and any(u.sink for u in sides.values()):
            yield Check(peer.name, WARNING, f"{user} may not create temporary tables: large "
                        "one-way batches into this peer travel as items, not staged (slower)",
                        f"GRANT TEMPORARY ON DATABASE {_pg_ident(db)} TO {who};")
        for side, use in sides.items():
            table = _pg_ident(side.schema, side.table)
            exists = conn.execute(SQL["table_exists"], (table,)).fetchone()[0]
            if not exists:
                yield Check(peer.name, ERROR, f"table {side.qualified} does not exist",
                            "create it (or fix the link's table name)")
                continue
            want = (["SELECT"] if use.source else []) + (
                ["SELECT", "INSERT", "UPDATE", "DELETE"] if use.sink else [])
            missing = [p for p in dict.fromkeys(want) if not conn.execute(
                SQL["table_privilege"], (table, p)).fetchone()[0]]
            if missing:
                yield Check(peer.name, ERROR, f"{user} lacks {', '.join(missing)} on {table}",
                            f"GRANT {', '.join(missing)} ON TABLE {table} TO {who};")
            yield from _capture(conn, peer.name, table, use.triggers, user, who)
        conn.rollback()


def _capture(conn: psycopg.Connection, peer: str, table: str, triggers: list[str], user: str,
             who: str) -> Iterator[Check]:
    """A source table's capture: installed, or who may install it. The bridge's own role
    needs no TRIGGER privilege (README, Privileges): `install` runs as the table's owner."""
    if not triggers:
        return
    if conn.execute(SQL["triggers_present"], (table, triggers)).fetchone()[0] == len(triggers):
        return
    if conn.execute(SQL["table_privilege"], (table, "TRIGGER")).fetchone()[0]:
        yield Check(peer, WARNING, f"capture is not installed on {table}",
                    "run `syncbridge install`")
    else:
        yield Check(peer, WARNING, f"capture is not installed on {table}, and {user} may not "
                    "install it (TRIGGER)", "run `syncbridge install` as the table's owner, "
                    f"or GRANT TRIGGER ON TABLE {table} TO {who};")


def _peer_error(e: BaseException) -> bool:
    """Failures that say something about the peer (unreachable, login, driver missing)."""
    import psycopg

    from syncbridge.engine.errors import is_odbc_error

    return isinstance(e, OSError | RuntimeError | psycopg.Error) or is_odbc_error(e)


def _safe(text: str) -> str:
    return re.sub(r"PWD=[^;]*", "PWD=***", text, flags=re.IGNORECASE)
