"""The session settings of every bridge and check connection to a Postgres peer.

Values travel between Postgres peers, and are compared, as their text
representation (the type's output function). That text depends on session
settings: timestamptz on TimeZone, date on DateStyle, interval on
IntervalStyle, float on extra_float_digits, money on lc_monetary, bytea on
bytea_output. Pinning them here, on both ends, makes the output of one server
the exact input of the other whatever either server's defaults are, and makes
equal values print alike on both. They are startup parameters, so a pooled
connection's RESET ALL returns to them.
"""

from __future__ import annotations

import psycopg

EXACT = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",  # months, days and seconds printed apart: '1 mon 30 days'
    "extra_float_digits": "3",  # shortest text that reads back to the same float (PG 12+)
    "bytea_output": "hex",
    "lc_monetary": "C",
    "xmloption": "content",  # a fragment reads back as it was printed
}


def settings(application_name: str) -> dict[str, str]:
    """asyncpg `server_settings` for a connection of this kind."""
    return {"application_name": application_name, **EXACT}


def connect(dsn: str, autocommit: bool = True) -> psycopg.Connection:
    """A psycopg connection in the same pinned settings (CLI reads, seeding, tests)."""
    conn = psycopg.connect(dsn, autocommit=autocommit)
    for k, v in EXACT.items():
        conn.execute("select set_config(%s, %s, false)", (k, v))  # for the whole session
    if not autocommit:
        conn.commit()
    return conn
