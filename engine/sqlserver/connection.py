"""Driver and connections of a SQL Server peer: pyodbc found, connection strings built,
and each pyodbc connection kept on its own thread.

pyodbc is imported only when a connection is opened, so a Postgres-only install
never needs unixODBC. pyodbc blocks and has threadsafety 1 (share the module,
not a connection), and a pyodbc transaction must stay on the thread that began
it; so each connection gets its own single-thread executor (`Conn`, reference
§4) and every call for that connection runs there, one at a time, while the
event loop keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from syncbridge.engine import errors
from syncbridge.engine.sqlserver import convert

DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
DEFAULT_PORT = 1433
SS_TIMESTAMPOFFSET = -155  # ODBC type of datetimeoffset (msodbcsql.h)
APP_NAME = "syncbridge"  # APP= in every connection string: sys.dm_exec_sessions.program_name

INSTALL_HELP = (
    "SQL Server peers need pyodbc and an ODBC driver. On Debian/Ubuntu:\n"
    "  apt-get install unixodbc            # libodbc.so.2, which pyodbc loads\n"
    "  then Microsoft's msodbcsql18 package (add packages.microsoft.com's apt repo, then\n"
    "  ACCEPT_EULA=Y apt-get install msodbcsql18) for 'ODBC Driver 18 for SQL Server',\n"
    "  or apt-get install tdsodbc for FreeTDS (driver name 'FreeTDS', TDS_Version=7.4)\n"
    "  pip install 'syncbridge[sqlserver]'  # pyodbc"
)


class SqlServerUnavailable(RuntimeError):
    """pyodbc or the configured ODBC driver is missing; the message says what to install."""


class SqlServerError(RuntimeError):
    """The peer is reachable but not set up as the bridge needs (message says how to fix)."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds; 0 = none. Login (pyodbc.connect timeout=), query (Connection.timeout,
    HYT00 when exceeded) and lock waits (SET LOCK_TIMEOUT, Msg 1222): pyodbc's default
    is to wait forever, which would stall a link behind one blocked lock."""

    login: int = 15
    query: int = 300
    lock: int = 30


def import_pyodbc() -> Any:
    """pyodbc, or SqlServerUnavailable saying exactly what to install."""
    try:
        import pyodbc
    except ImportError as e:  # no pyodbc, or no libodbc.so.2 (unixODBC) for it to load
        raise SqlServerUnavailable(f"cannot import pyodbc ({e}).\n{INSTALL_HELP}") from None
    return pyodbc


def check_driver(pyodbc: Any, conn_str: str) -> None:
    """Fail early, naming the installed drivers, when the configured one is absent."""
    wanted = odbc_driver(conn_str)
    if wanted is None:
        return  # a DSN= entry from odbc.ini: the driver manager resolves it
    installed = list(pyodbc.drivers())
    if wanted not in installed:
        raise SqlServerUnavailable(
            f"ODBC driver {wanted!r} is not installed (installed: {installed or 'none'}).\n"
            f"{INSTALL_HELP}"
        )


def odbc_driver(conn_str: str) -> str | None:
    m = re.search(r"(?:^|;)\s*driver\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)", conn_str, re.IGNORECASE)
    if not m:
        return None
    value = m.group(1).strip()
    return value[1:-1].replace("}}", "}") if value.startswith("{") else value


def _odbc_value(value: str) -> str:
    """Brace a value holding ; { } or edge spaces (ODBC rule: } doubled inside braces)."""
    if re.search(r"[;{}]|^\s|\s$", value):
        return "{" + value.replace("}", "}}") + "}"
    return value


def odbc_connection_string(dsn: str) -> str:
    """An ODBC connection string from either that or an mssql:// URL.

    mssql://user:pass@host:port/db?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes
    -> Driver={ODBC Driver 18 for SQL Server};Server=tcp:host,port;Database=db;UID=user;PWD=pass;
       TrustServerCertificate=yes
    Other query keys pass through unchanged (Encrypt, TDS_Version, ...);
    mssql:///?odbc_connect=<url-encoded ODBC string> carries a whole ODBC string
    (SQLAlchemy's spelling), which is how yoyo gets an ODBC-string DSN.
    """
    parts = urlsplit(dsn)
    if parts.scheme.lower() not in ("mssql", "sqlserver", "mssql+pyodbc"):
        return dsn
    args = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "odbc_connect" in args:
        return args["odbc_connect"]
    driver = next((args.pop(k) for k in list(args) if k.lower() == "driver"), DEFAULT_DRIVER)
    pairs: list[tuple[str, str]] = [("Driver", "{" + driver.replace("}", "}}") + "}")]
    if parts.hostname:
        server = parts.hostname
        if "freetds" in driver.lower():
            pairs += [("Server", server), ("Port", str(parts.port or DEFAULT_PORT))]
        else:
            pairs.append(("Server", f"tcp:{server},{parts.port or DEFAULT_PORT}"))
    database = unquote(parts.path.lstrip("/"))
    if database:
        pairs.append(("Database", _odbc_value(database)))
    if parts.username is not None:
        pairs.append(("UID", _odbc_value(unquote(parts.username))))
    if parts.password is not None:
        pairs.append(("PWD", _odbc_value(unquote(parts.password))))
    pairs += [(k, _odbc_value(v)) for k, v in args.items()]
    return ";".join(f"{k}={v}" for k, v in pairs) + ";"


def with_app_name(conn_str: str) -> str:
    """APP=syncbridge appended unless the string names an application already."""
    if re.search(r"(?:^|;)\s*app\s*=", conn_str, re.IGNORECASE):
        return conn_str
    return conn_str + ("" if conn_str.rstrip().endswith(";") else ";") + f"APP={APP_NAME};"


def connect(pyodbc: Any, conn_str: str, autocommit: bool, timeouts: Timeouts) -> Any:
    """A pyodbc connection with login, query and lock timeouts (issue 18 items 16, 17)."""
    cn = pyodbc.connect(conn_str, autocommit=autocommit, timeout=timeouts.login)
    cn.timeout = timeouts.query  # HYT00 (transient) when a statement runs longer
    cn.add_output_converter(SS_TIMESTAMPOFFSET, convert.datetimeoffset_from_odbc)
    if timeouts.lock:
        # An int spliced into a SET (it takes no parameter); opens no transaction.
        cn.execute(f"SET LOCK_TIMEOUT {int(timeouts.lock) * 1000};")
    return cn


def first_result(cur: Any) -> list[Any]:
    """Rows of the first result set of a batch (skipping any non-row results)."""
    while cur.description is None:
        if not cur.nextset():
            return []
    return cur.fetchall()



class Conn:
    """One pyodbc connection and the single thread that may touch it."""

    def __init__(self, opener: Callable[[], Any], name: str) -> None:
        self._opener = opener
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mssql-{name}")
        self.cn: Any = None
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def _guard(self) -> asyncio.Lock:
        """One caller at a time per connection (a transaction held across calls must not
        see another drain's statement in between); one lock per event loop."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._guard():
            return await self._exec(fn, *args)

    async def _exec(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn, args)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
        """This connection for several calls of ONE transaction (read, decide, write):
        yields a `run` that no other caller interleaves with; the transaction is rolled
        back when the block fails (the last call commits it on success)."""
        async with self._guard():
            try:
                yield self._exec
            except BaseException:
                if self.cn is not None:
                    with contextlib.suppress(Exception):
                        await self._exec(_rollback)
                raise

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if self.cn is None:
            self.cn = self._opener()
        try:
            return fn(self.cn, *args)
        except Exception as e:
            self._after_error(e)
            raise

    def _after_error(self, e: Exception) -> None:
        """Roll back after a statement error; drop a broken connection so the next call
        reconnects (a transient error usually means the link itself is gone)."""
        if not errors.is_odbc_transient(e):
            try:
                self.cn.rollback()
                return
            except Exception:
                pass
        with contextlib.suppress(Exception):
            self.cn.close()
        self.cn = None

    async def close(self) -> None:
        def _close(cn: Any) -> None:
            cn.close()

        if self.cn is not None:
            await self.run(_close)
            self.cn = None
        self._pool.shutdown(wait=False)


def _rollback(cn: Any) -> None:
    cn.rollback()

