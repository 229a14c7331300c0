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
import re

import asyncpg

from syncbridge.engine.config import ConfigError

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
        from syncbridge.engine.sqlserver.peer import (
            is_transient as mssql_transient,  # no pyodbc import
        )

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


class PeerUnreachable(ConfigError):
    """A peer could not be reached or refused the login: not a config-file problem."""


_QUOTED_VALUE = re.compile(r'(: |=)"[^"]*"')  # `invalid input syntax for type uuid: "…"`


def describe_safe(exc: BaseException) -> str:
    """One line for logs: sqlstate, message and constraint, never row values.

    Postgres puts row values in DETAIL ("Failing row contains (…)", "Key (email)=(…)
    already exists") and data errors quote the bad value in the message itself; both
    are dropped here and kept in sync.dead_letter (`describe`), which is where
    values are allowed to go."""
    first = (str(exc).strip().splitlines() or [""])[0]
    parts = [f"[{sqlstate(exc)}]" if sqlstate(exc) else type(exc).__name__,
             _QUOTED_VALUE.sub(r'\1"…"', first)]
    constraint = getattr(exc, "constraint_name", None) or getattr(
        getattr(exc, "diag", None), "constraint_name", None)
    if constraint:
        parts.append(f"(constraint {constraint})")
    return " ".join(p for p in parts if p)


# What to run when a peer refuses for lack of a privilege (sqlstate 42501).
_GRANTS = [
    (re.compile(r"permission denied for schema (\S+)"),
     "GRANT USAGE, CREATE ON SCHEMA {0} TO {role};"),
    (re.compile(r"permission denied for database (\S+)"),
     "GRANT CREATE ON DATABASE {0} TO {role};"),
    (re.compile(r"permission denied for (?:table|relation) (\S+)"),
     "GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON {0} TO {role};"),
    (re.compile(r"permission denied for sequence (\S+)"),
     "GRANT USAGE, SELECT, UPDATE ON SEQUENCE {0} TO {role};"),
    (re.compile(r"must be owner of (?:table|relation) (\S+)"),
     "ALTER TABLE {0} OWNER TO {role};  -- or run this command as the table's owner"),
    (re.compile(r"permission denied for function (\S+)"),
     "GRANT EXECUTE ON FUNCTION {0} TO {role};"),
]


def operator_message(exc: BaseException, role: str = "<the bridge's role>") -> str | None:
    """One line saying what went wrong with a database and what to do; None if `exc`
    is not a database error (then the caller lets it propagate)."""
    import psycopg  # the CLI's driver; asyncpg errors carry the same sqlstates

    if not isinstance(exc, psycopg.Error | asyncpg.PostgresError | OSError):
        return None
    first = (str(exc).strip().splitlines() or [""])[0]
    if "password authentication failed" in first:
        return f"{first}: check the password in the peer's DSN (or its credential file)"
    if sqlstate(exc) == "42501" or "permission denied" in first or "must be owner" in first:
        for pattern, grant in _GRANTS:
            m = pattern.search(first)
            if m:
                return f"{first}; as a superuser or the owner, run: " + grant.format(
                    m.group(1).strip('"'), role=role)
        return f"{first}; grant the bridge's role the privilege named (see README, Privileges)"
    if isinstance(exc, psycopg.OperationalError | OSError):
        return f"cannot reach the database: {first}"
    return f"database error: {describe_safe(exc)}"
