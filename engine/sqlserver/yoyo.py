"""A yoyo backend for SQL Server (reference §6): `yoyo apply --database mssql://...`.

yoyo 9.0 looks backends up by URL scheme in the `yoyo.backends` entry-point
group (yoyo/backends/base.py: get_backend_class). Its bundled `odbc` backend
does not work against SQL Server as shipped:
- `begin()` sends a bare BEGIN; pyodbc's manual-commit mode needs no SQL at all
  (the driver starts the transaction with the first statement);
- savepoints use SAVEPOINT / ROLLBACK TO SAVEPOINT / RELEASE, where T-SQL has
  SAVE TRANSACTION x / ROLLBACK TRANSACTION x and no release;
- its internal tables use TIMESTAMP, which in SQL Server is rowversion, so
  every explicit time insert fails (Msg 273);
- `-- transactional: false` still runs inside a driver transaction, so
  ALTER DATABASE fails (Msg 226).
This subclass fixes those four. Register it in pyproject.toml:

    [project.entry-points."yoyo.backends"]
    mssql = "syncbridge.engine.sqlserver.yoyo:MSSQLBackend"

URLs: mssql://user:pass@host:port/db?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes
(converted by mssql_peer.odbc_connection_string, the same as the bridge uses).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from yoyo.backends.base import DatabaseBackend

from syncbridge.engine import sqlfiles
from syncbridge.engine.sqlserver import sql as tsql
from syncbridge.engine.sqlserver.connection import (
    check_driver,
    import_pyodbc,
    odbc_connection_string,
)

SCHEME = "mssql"
_SAVEPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")  # T-SQL savepoint names: <= 32 chars
INTERNAL_SCHEMA_VERSION = 2  # yoyo/internalmigrations: the version these tables match
SQL = sqlfiles.Queries("sqlserver/yoyo.sql")


class MSSQLBackend(DatabaseBackend):
    """yoyo's DatabaseBackend speaking T-SQL through pyodbc."""

    driver_module = "pyodbc"
    list_tables_sql = (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = SCHEMA_NAME()"
    )
    # DATETIME2 instead of TIMESTAMP (= rowversion on SQL Server, Msg 273 on insert).
    create_lock_table_sql = SQL["create_lock_table"]

    def __init__(self, dburi: Any, migration_table: str) -> None:
        self._saved: dict[str, bool] = {}
        super().__init__(dburi, migration_table)

    def _load_driver_module(self) -> Any:
        driver = import_pyodbc()  # a clear "install unixodbc/msodbcsql18" error if absent
        from yoyo import exceptions

        exceptions.register(driver.DatabaseError)
        return driver

    def connect(self, dburi: Any) -> Any:
        conn_str = odbc_connection_string(uri_to_url(dburi))
        check_driver(self.driver, conn_str)
        return self.driver.connect(conn_str, autocommit=False)

    # transactions: pyodbc manual commit, T-SQL savepoints

    def begin(self) -> None:
        """No SQL: with autocommit off the driver opens the transaction itself."""
        assert not self._in_transaction
        self._in_transaction = True

    def savepoint(self, id: str) -> None:
        """SAVE TRANSACTION needs an open transaction (Msg 628 otherwise), and a statement
        like `SELECT @@TRANCOUNT` (no table) does not open one; so save only when one is
        open, and remember whether we did."""
        name = _savepoint_name(id)
        open_ = self.execute("SELECT @@TRANCOUNT").fetchone()[0] > 0
        if open_:
            self.execute(f"SAVE TRANSACTION {name}")
        self._saved[name] = open_

    def savepoint_release(self, id: str) -> None:
        """T-SQL has no RELEASE SAVEPOINT: a savepoint ends with its transaction."""
        self._saved.pop(_savepoint_name(id), None)

    def savepoint_rollback(self, id: str) -> None:
        """Undo to the savepoint; if none was saved (nothing ran before it) or the error
        doomed the transaction (XACT_STATE() = -1), undo the whole transaction."""
        name = _savepoint_name(id)
        saved = self._saved.pop(name, False)
        state = self.execute("SELECT XACT_STATE()").fetchone()[0]
        if saved and state == 1:
            self.execute(f"ROLLBACK TRANSACTION {name}")
        else:
            self.connection.rollback()

    @contextmanager
    def disable_transactions(self) -> Iterator[None]:
        """`-- transactional: false`: really autocommit, so ALTER DATABASE works (Msg 226)."""
        self.rollback()
        self.connection.autocommit = True
        try:
            yield
        finally:
            self.connection.autocommit = False

    # yoyo's internal tables, created with DATETIME2

    def ensure_internal_schema_updated(self) -> None:
        """Create yoyo's version-2 tables ourselves on a fresh database (its own upgrade
        path writes TIMESTAMP columns), then let yoyo carry on as usual."""
        if not self._internal_schema_updated and self.migration_table not in self.list_tables():
            with self.lock(), self.transaction():
                for sql in self.internal_tables_sql():
                    self.execute(sql)
                self.execute(
                    f"INSERT INTO {self.version_table_quoted} VALUES (:version, :when)",
                    {"version": INTERNAL_SCHEMA_VERSION,
                     "when": datetime.now(UTC).replace(tzinfo=None)},
                )
        super().ensure_internal_schema_updated()

    def internal_tables_sql(self) -> list[str]:
        """yoyo/internalmigrations/v2.py's three tables with DATETIME2 for TIMESTAMP."""
        return [self.format_sql(SQL[name]) for name in
                ("create_migration_table", "create_log_table", "create_version_table")]

    def quote_identifier(self, s: str) -> str:
        """T-SQL brackets (sql.qi), the one quoting the engine uses for SQL Server."""
        return tsql.qi(s)


def _savepoint_name(id: str) -> str:
    if not _SAVEPOINT.match(id):
        raise ValueError(f"savepoint name {id!r} is not a plain T-SQL name of <= 32 chars")
    return id


def yoyo_url(dsn: str) -> str:
    """The --database URL for yoyo from a peer DSN (an mssql:// URL or an ODBC string)."""
    if urlsplit(dsn).scheme.lower() == SCHEME:
        return dsn
    return f"{SCHEME}:///?" + urlencode({"odbc_connect": dsn})


def uri_to_url(dburi: Any) -> str:
    """yoyo's parsed DatabaseURI back to the mssql:// URL odbc_connection_string reads."""
    url = str(dburi)
    return SCHEME + url[url.index(":"):]
