"""Which failures are worth retrying, and which belong to one row.

Transient: the connection or the server (class 08, admin shutdown, too many
connections) or concurrency (serialization, deadlock, lock timeout) -> retry
the whole batch with backoff. Row errors: data exceptions (class 22) and
integrity violations (class 23) -> isolate the row; a foreign-key violation is
usually a parent that has not arrived yet, so that row is deferred first and
only dead-lettered after repeated attempts.
"""

from __future__ import annotations

import asyncio

import asyncpg

TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57014",  # query_canceled (statement_timeout)
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
    "53400",  # configuration_limit_exceeded
    "25006",  # read_only_sql_transaction (failover in progress)
}
FK_VIOLATION = "23503"


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def is_connection_error(exc: BaseException) -> bool:
    """The connection itself is suspect: drop pooled connections, not just retry.

    InternalClientError ("another operation is in progress") is what asyncpg
    raises on a connection left half-way by a server restart."""
    return isinstance(exc, (OSError, ConnectionError,
                            asyncpg.exceptions.ConnectionDoesNotExistError,
                            asyncpg.exceptions.InterfaceError,
                            asyncpg.exceptions.InternalClientError,
                            asyncpg.exceptions.PostgresConnectionError)) or (
        (sqlstate(exc) or "").startswith("08") or sqlstate(exc) in ("57P01", "57P02", "57P03"))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.TimeoutError) or is_connection_error(exc):
        return True
    state = sqlstate(exc)
    if state:
        return state in TRANSIENT_SQLSTATES or state.startswith("08")
    if is_odbc_error(exc):  # SQL Server (pyodbc): its SQLSTATE and native error numbers
        from .mssql_peer import is_transient as mssql_transient  # no pyodbc import

        return mssql_transient(exc)
    return False


def is_odbc_error(exc: BaseException) -> bool:
    """An exception raised by pyodbc, told without importing it (Postgres-only installs)."""
    return any(c.__module__ == "pyodbc" for c in type(exc).__mro__)


def is_row_error(exc: BaseException) -> bool:
    state = sqlstate(exc) or ""
    return state[:2] in ("22", "23")


def describe(exc: BaseException) -> str:
    """One line for logs and dead letters: sqlstate, message, constraint, detail."""
    parts = [f"[{sqlstate(exc)}]" if sqlstate(exc) else type(exc).__name__, str(exc).strip()]
    constraint = getattr(exc, "constraint_name", None)
    if constraint:
        parts.append(f"(constraint {constraint})")
    detail = getattr(exc, "detail", None)
    if detail:
        parts.append(f"detail: {detail}")
    return " ".join(p for p in parts if p)
