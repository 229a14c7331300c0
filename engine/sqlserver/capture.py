"""Change tracking set up and the catalog of a SQL Server table: what `install`,
`uninstall`, `validate` and `doctor` run, blocking, on short-lived connections.

Change tracking setup runs on its own autocommit connection because ALTER
DATABASE cannot run inside a transaction (Msg 226). The bridge's writes carry
a per-link CHANGE_TRACKING_CONTEXT (`echo_context`) so the link's own change
read skips them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from syncbridge.engine.catalog import Column, Table
from syncbridge.engine.config import Peer, Side
from syncbridge.engine.sqlserver import checks, types
from syncbridge.engine.sqlserver import sql as tsql
from syncbridge.engine.sqlserver.connection import (
    SqlServerError,
    Timeouts,
    check_driver,
    connect,
    import_pyodbc,
    odbc_connection_string,
    with_app_name,
)

DEFAULT_RETENTION_DAYS = 7  # CT retention; must exceed the longest bridge outage
ECHO_NAMESPACE = uuid.UUID("6f1d3c52-4f0e-4c59-9d59-3b8f5a1f3e11")  # uuid5 namespace


@dataclass
class TableMeta:
    """What the apply batch needs beyond catalog.Table: collations and IDENTITY columns."""

    collations: dict[str, str] = field(default_factory=dict)
    identity: frozenset[str] = frozenset()



def echo_context(link: str) -> bytes:
    """The CHANGE_TRACKING_CONTEXT of this bridge's writes for one link (16 bytes, never NULL).

    Per link, not per bridge: a table in two links must still pass the other
    link's writes on; only a link's own applies are filtered from its reads.
    """
    return uuid.uuid5(ECHO_NAMESPACE, link).bytes



def mssql_type(type_name: str, max_length: int, precision: int, scale: int) -> str:
    """sys.columns facts -> the spelling mssql_types and mssql_sql expect."""
    t = type_name.lower()
    if t in ("nvarchar", "nchar"):
        return f"{t}(max)" if max_length == -1 else f"{t}({max_length // 2})"
    if t in ("varchar", "char", "varbinary", "binary"):
        return f"{t}(max)" if max_length == -1 else f"{t}({max_length})"
    if t in ("decimal", "numeric"):
        return f"decimal({precision},{scale})"
    if t in ("datetime2", "datetimeoffset", "time"):
        return f"{t}({scale})"
    if t == "float":
        return "float" if precision > 24 else "real"
    return t



def key_warnings(table: Table, meta: TableMeta) -> list[checks.Finding]:
    """Warnings about text key columns (see MssqlPeer.key_collation_warnings)."""
    out = []
    for k in table.pk:
        if types.parse_mssql(table.columns[k].type).kind != "text":
            continue
        name = f"{table.schema}.{table.name}.{k}"
        out.append(checks.Finding(
            checks.WARNING,
            f"{name} is a text key: SQL Server ignores trailing spaces in = under every "
            "collation (BIN2 included), so 'abc' and 'abc ' are one key here but two in "
            "Postgres, and the second fails with 2627",
            f'on the Postgres table of the link: ALTER TABLE <table> ADD CHECK ("{k}" = '
            f'rtrim("{k}"));'))
        coll = meta.collations.get(k, "")
        if "_CI" in coll or "_AI" in coll:
            out.append(checks.Finding(
                checks.WARNING, f"{name} uses {coll}: 'a' and 'A' are one key here",
                f"ALTER TABLE {tsql.qualified(table.schema, table.name)} ALTER COLUMN {tsql.qi(k)} "
                f"{table.columns[k].type} COLLATE Latin1_General_100_BIN2 NOT NULL; (drop and "
                "re-create the primary key around it)"))
    return out


def read_catalog(cur: Any, side: Side) -> tuple[Table | None, TableMeta]:
    """Columns (computed and rowversion left out), primary key, collations, IDENTITY."""
    obj = tsql.side_name(side)
    rows = cur.execute(tsql.static("table_columns").sql, obj).fetchall()
    if not rows:
        return None, TableMeta()
    pk = tuple(r[0] for r in cur.execute(tsql.static("table_pk_columns").sql, obj).fetchall())
    cols = {r[0]: Column(r[0], mssql_type(r[1], r[2], r[3], r[4]), bool(r[5])) for r in rows}
    meta = TableMeta({r[0]: r[6] for r in rows if r[6]}, frozenset(r[0] for r in rows if r[7]))
    return Table(side.schema, side.table, cols, pk), meta


def enable(cur: Any, sides: list[Side], retention: int, unit: str,
            notes: list[str] | None = None) -> list[str]:
    """Refuses (SqlServerError) a database the bridge cannot use before altering anything:
    compatibility level below 130 (OPENJSON), or not the writable primary. A change
    retention already on and shorter than the configured one is reported in `notes`
    with the statement that lengthens it, not changed behind the DBA's back."""
    ran: list[str] = []

    def do(r: tsql.Rendered) -> None:
        cur.execute(r.sql)
        ran.append(r.sql)

    found = checks.database(cur, source=False, retention_days=retention)
    if checks.errors(found):
        raise SqlServerError(checks.render(checks.errors(found)))
    db = cur.execute(tsql.static("db_name").sql).fetchone()[0]
    if notes is not None and unit.upper() == "DAYS":
        notes += [f"{f.what}; fix: {f.fix}" for f in
                  checks.database(cur, source=True, retention_days=retention)
                  if f.level == checks.WARNING]
    if cur.execute(tsql.static("db_snapshot_state").sql).fetchone()[0] != "ON":
        do(tsql.enable_db_snapshot(db))
    if cur.execute(tsql.static("db_ct_state").sql).fetchone() is None and \
            (cur.execute(tsql.static("db_ct_version").sql).fetchone() or (None,))[0] is None:
        do(tsql.enable_db_ct(db, retention, unit))  # off (not merely invisible to this login)
    for side in sides:
        obj = tsql.side_name(side)
        if cur.execute(tsql.static("table_pk").sql, obj).fetchone() is None:
            raise SqlServerError(f"{side.qualified} has no primary key; change tracking needs one")
        if cur.execute(tsql.static("table_ct_state").sql, obj).fetchone() is None:
            do(tsql.enable_table_ct(side))
    return ran


def disable(cur: Any, side: Side) -> list[str]:
    """Table-level CT off (its tracking data goes with it). The database setting stays:
    other tables may use it; a DBA turns it off with disable_db_ct once no table does."""
    if cur.execute(tsql.static("table_ct_state").sql, tsql.side_name(side)).fetchone() is None:
        return []
    r = tsql.disable_table_ct(side)
    cur.execute(r.sql)
    return [r.sql]


# --- blocking entry points for the CLI (validate / install / uninstall) -------------------------


def _autocommit(peer: Peer, driver: Any = None, timeouts: Timeouts | None = None) -> Any:
    """A short-lived autocommit connection: ALTER DATABASE cannot run in a transaction.
    With the query timeout: ALTER DATABASE ... ALLOW_SNAPSHOT_ISOLATION ON waits for every
    open transaction, so install fails with HYT00 instead of hanging (issue 18 item 17)."""
    pyodbc = driver or import_pyodbc()
    conn_str = with_app_name(odbc_connection_string(peer.dsn))
    check_driver(pyodbc, conn_str)
    return connect(pyodbc, conn_str, True, timeouts or Timeouts())


def read_table_sync(peer: Peer, side: Side, *, driver: Any = None) -> Table | None:
    """catalog.Table of one SQL Server table (None if absent), for link validation."""
    cn = _autocommit(peer, driver)
    try:
        return read_catalog(cn.cursor(), side)[0]
    finally:
        cn.close()


def install_capture(peer: Peer, side: Side, *, retention: int = DEFAULT_RETENTION_DAYS,
                    unit: str = "DAYS", driver: Any = None, notes: list[str] | None = None,
                    timeouts: Timeouts | None = None) -> list[str]:
    """Snapshot isolation + change tracking for one source table; idempotent (§1.1).
    Returns the ALTER statements it had to run (none when all was on already); warnings
    (a shorter existing retention) go to `notes`."""
    cn = _autocommit(peer, driver, timeouts)
    try:
        return enable(cn.cursor(), [side], retention, unit, notes)
    finally:
        cn.close()


def uninstall_capture(peer: Peer, side: Side, *, driver: Any = None) -> list[str]:
    """Change tracking off for one table (the database-level setting is left on)."""
    cn = _autocommit(peer, driver)
    try:
        return disable(cn.cursor(), side)
    finally:
        cn.close()

