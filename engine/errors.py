"""Which failures are worth retrying, and which belong to one row.

Transient: the connection or the server (class 08, admin shutdown, too many
connections) or concurrency (serialization, deadlock, lock timeout) -> retry
the whole batch with backoff. Row errors: data exceptions (class 22) and
integrity violations (class 23) -> isolate the row; a foreign-key violation is
usually a parent that has not arrived yet, so that row is deferred first and
only dead-lettered after repeated attempts.

SQL Server errors (pyodbc) are told by their SQLSTATE and native error numbers
alone, so this shared module never imports pyodbc or engine.sqlserver.
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
FEATURE_NOT_SUPPORTED = "0A000"

# SQL Server through pyodbc: SQLSTATEs worth a retry (link failure, connection
# failure, timeout, deadlock / serialization: SQL Server reports 1205 as 40001).
ODBC_TRANSIENT_SQLSTATES = frozenset({"08S01", "08001", "08004", "HYT00", "HYT01", "40001"})
# Native errors: 1205 deadlock victim, 1222 lock request timeout (SET LOCK_TIMEOUT),
# 3960/3961 snapshot conflicts, 40197/40501/40613/4991x Azure SQL transient faults.
MSSQL_TRANSIENT_ERRORS = frozenset({1205, 1222, 3960, 3961, 40197, 40501, 40613, 49918, 49919,
                                    49920})
# pyodbc (src/errors.cpp, GetErrorFromHandle) builds args[1] from the ODBC diagnostic
# records as "[SQLSTATE] message (native) (SQLFunction)" for the first record and
# "; [SQLSTATE] message (native)" for each further one (only the first on non-Windows).
# The native number is the "(n)" that ends a record, never one inside the message text.
# SQL Server errors that belong to one row's data (the rest of the batch can still go):
# 515 NULL into NOT NULL, 547 FK/CHECK, 2601/2627 duplicate key, 2628/8152 string
# truncation, 8114/8115 conversion/overflow, 220/232 arithmetic overflow, 241/242/
# 517 date conversion/range, 245/8169 conversion (e.g. uniqueidentifier).
MSSQL_ROW_ERRORS = frozenset({515, 547, 2601, 2627, 2628, 8152, 8114, 8115, 220, 232,
                              241, 242, 517, 245, 8169})
MSSQL_FK = 547  # "conflicted with the FOREIGN KEY constraint" (child first) and "... with the
# REFERENCE constraint" (parent delete blocked by children); also CHECK, which is never deferred
_NATIVE = re.compile(r"\((-?\d+)\)(?: \(SQL\w+\))?(?=; \[[0-9A-Z]{5}\] |\s*$)")


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


DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
"""What a statement to a Postgres server that is down, gone or refusing can raise."""


class AlreadyApplied(Exception):
    """Signals of a batch were already applied by an earlier batch whose source commit
    was lost (they came back at the source without that batch's recovery). The batch is
    given back undone and retried: the retry recovers the earlier batch first."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (asyncio.TimeoutError, AlreadyApplied)) or is_connection_error(exc):
        return True
    state = sqlstate(exc)
    if state:
        return state in TRANSIENT_SQLSTATES or state.startswith("08")
    if is_odbc_error(exc):  # SQL Server (pyodbc): its SQLSTATE and native error numbers
        return is_odbc_transient(exc)
    return False


def is_odbc_error(exc: BaseException) -> bool:
    """An exception raised by pyodbc, told without importing it (Postgres-only installs)."""
    return any(c.__module__ == "pyodbc" for c in type(exc).__mro__)


def odbc_state(exc: BaseException) -> str:
    """The SQLSTATE of a pyodbc error: its args[0] (pyodbc.Error(state, message))."""
    args = getattr(exc, "args", ())
    return str(args[0]) if args else ""


def native_errors(exc: BaseException) -> list[int]:
    """SQL Server's native error numbers of a pyodbc error, one per diagnostic record."""
    args = getattr(exc, "args", ())
    text = str(args[1]) if len(args) > 1 else (str(args[0]) if args else "")
    return [int(m.group(1)) for m in _NATIVE.finditer(text)]


def is_odbc_transient(exc: BaseException) -> bool:
    """A SQL Server error a retry with backoff can cure (connection lost, deadlock,
    timeout), told by SQLSTATE and native numbers alone: no pyodbc import."""
    if odbc_state(exc) in ODBC_TRANSIENT_SQLSTATES:
        return True
    return any(n in MSSQL_TRANSIENT_ERRORS for n in native_errors(exc))


def is_odbc_row_error(exc: BaseException) -> bool:
    """A pyodbc error SQL Server raised because of one row's data (class 22/23 or a
    native number in MSSQL_ROW_ERRORS): the rest of the batch can still go."""
    if not is_odbc_error(exc) or is_odbc_transient(exc):
        return False
    return odbc_state(exc)[:2] in ("22", "23") or any(
        n in MSSQL_ROW_ERRORS for n in native_errors(exc))


def is_mssql_fk_miss(exc: BaseException) -> bool:
    """A foreign-key miss worth deferring, like 23503 on Postgres: Msg 547 in either form
    (FOREIGN KEY: the parent is not there yet; REFERENCE: children still point at a
    deleted parent, whose delete usually arrives next), never a CHECK constraint."""
    if MSSQL_FK not in native_errors(exc):
        return False
    text = " ".join(str(a) for a in getattr(exc, "args", ())).upper()
    return "FOREIGN KEY" in text or "REFERENCE CONSTRAINT" in text


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
