"""Issue 18 ("SQL Server on first contact"): one test per finding that can be checked
without a server — the exact statement rendered, the classification made, or the flow
the adapter follows against the scripted pyodbc double of test_mssql_peer.py (a double of
the driver, not of SQL Server: claims about SQL Server behaviour cite the reference).
The drain-level findings (items 1, 2, 14, 18, 19, 20) are in test_mssql_drain.py and the
live counterparts in test_mssql_live.py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
import sqlglot
from mssql_shape import RAW, shape
from sqlglot import exp
from test_mssql_peer import IDENT, UID, Conn, ct_responder, fake_driver, make_peer, run
from test_mssql_sql import parse, strip_comments

from syncbridge.engine import catalog, config, config_file, errors, install
from syncbridge.engine.config import Peer, Side
from syncbridge.engine.sqlserver import capture as ctcap
from syncbridge.engine.sqlserver import changes as chg
from syncbridge.engine.sqlserver import checks as mssql_checks
from syncbridge.engine.sqlserver import connection as mssql_odbc
from syncbridge.engine.sqlserver import convert, openjson, pg_to_ct
from syncbridge.engine.sqlserver import sql as q
from syncbridge.engine.sqlserver import types as mssql_types


class OdbcError(Exception):
    """pyodbc's shape: args = (SQLSTATE, message built by src/errors.cpp)."""


OdbcError.__module__ = "pyodbc"
PREFIX = "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"


def odbc(state: str, *records: tuple[str, int]) -> OdbcError:
    """The message pyodbc's GetErrorFromHandle builds: "[state] msg (native) (fn)" then
    "; [state] msg (native)" per further diagnostic record."""
    (msg, native), *more = records
    text = f"[{state}] {PREFIX}{msg} ({native}) (SQLExecDirectW)"
    for m, n in more:
        text += f"; [01000] {PREFIX}{m} ({n})"
    return OdbcError(state, text)


# --- item 1: one NUL does not stop the change set -----------------------------------------


def test_item1_a_nul_value_becomes_unsendable_and_the_other_rows_convert() -> None:
    base = ct_responder()

    def respond(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        rows = base(sql, params)
        if "CHANGETABLE" in sql and rows:
            bad = list(rows[0])
            bad[4], bad[5] = 3, "nul\x00here"
            return [tuple(bad), *rows]
        return rows

    peer, _ = make_peer(respond)
    got = run(peer.read_changes(shape(), "b", chg.CtCursor(5, IDENT), b"x" * 16))
    bad, good = got.upserts
    assert isinstance(bad["name"], convert.Unsendable) and "NUL" in bad["name"].reason
    assert bad["k2"] == 3 and good["name"] == "Zoë"
    with pytest.raises(ValueError, match="NUL"):
        convert.pg_value(bad["name"], "text")
    run(peer.close())


def test_item1_resync_pages_keep_going_past_a_nul() -> None:
    def respond(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        if "SELECT TOP (@n)" in sql:
            return [(UID, 1), (UID, 2)]
        return None

    s = shape()
    peer, _ = make_peer(respond)
    table = s.table("b")
    meta = ctcap.TableMeta()
    rows = ctcap.key_warnings(table, meta)  # no text key in the shape: nothing to warn about
    assert rows == []
    page = run(peer.read_keys_page(s, "b", None, 10))
    assert [r["k2"] for r in page] == [1, 2]
    assert isinstance(convert.from_mssql("a\x00", "nvarchar(10)"), convert.Unsendable)
    run(peer.close())


# --- item 2: sink key pages never use the SNAPSHOT reader ---------------------------------


def test_item2_sink_pages_run_on_the_read_committed_writer() -> None:
    peer, log = make_peer(lambda sql, p: [(UID, 1)] if "SELECT TOP (@n)" in sql else None)
    run(peer.read_keys_page(shape(), "b", None, 10, sink=True))
    assert "SET TRANSACTION ISOLATION LEVEL SNAPSHOT;" not in [s for s, _ in log], (
        "Msg 3952 on a database without ALLOW_SNAPSHOT_ISOLATION")
    run(peer.read_keys_page(shape(), "b", None, 10))
    assert "SET TRANSACTION ISOLATION LEVEL SNAPSHOT;" in [s for s, _ in log]
    run(peer.close())


# --- items 3, 21, 22: database readiness -----------------------------------------------------


def db_responder(compat: int = 150, updateable: str = "READ_WRITE", snapshot: str = "ON",
                 ct: tuple[Any, ...] | None = (True, 7, "DAYS"),
                 perms: dict[str, int] | None = None) -> Any:
    def respond(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        if "compatibility_level" in sql:
            return [(compat,)]
        if "'Updateability'" in sql:
            return [(updateable,)]
        if "SELECT DB_NAME()" in sql:
            return [("clinic",)]
        if "snapshot_isolation_state_desc" in sql:
            return [(snapshot,)]
        if "sys.change_tracking_databases" in sql:
            return [ct] if ct else []
        if "sys.key_constraints" in sql:
            return [(1,)]
        if "sys.change_tracking_tables" in sql:
            return [(False, 1, 1, 0)]
        if "HAS_PERMS_BY_NAME" in sql:
            return [((perms or {}).get(f"{params[0]} {params[1]}", 1),)]
        return None

    return respond


def findings(respond: Any, **kw: Any) -> list[mssql_checks.Finding]:
    cur = Conn(respond, [], True).cursor()
    return mssql_checks.database(cur, **kw)


def test_item3_compatibility_below_130_is_refused_with_the_fix() -> None:
    (f,) = findings(db_responder(compat=120), source=False, retention_days=7)
    assert f.level == "error" and "OPENJSON" in f.what
    assert f.fix == "ALTER DATABASE [clinic] SET COMPATIBILITY_LEVEL = 130;"
    log: list[Any] = []
    peer = Peer("clinic", "sqlserver", RAW["peers"]["clinic"]["dsn"])
    with pytest.raises(mssql_odbc.SqlServerError, match="COMPATIBILITY_LEVEL = 130"):
        ctcap.install_capture(peer, Side("clinic", "dbo", "t"),
                           driver=fake_driver(db_responder(compat=120), log))
    assert not any(s.startswith("ALTER") for s, _ in log), "refused before altering anything"


def test_item22_a_read_only_replica_is_refused() -> None:
    (f,) = findings(db_responder(updateable="READ_ONLY"), source=True, retention_days=7)
    assert f.level == "error" and "writable primary" in f.what


def test_item21_a_shorter_retention_is_reported_with_the_statement() -> None:
    (f,) = findings(db_responder(ct=(True, 2, "DAYS")), source=True, retention_days=7)
    assert f.level == "warning" and "2 DAYS" in f.what
    assert f.fix == "ALTER DATABASE [clinic] SET CHANGE_TRACKING (CHANGE_RETENTION = 7 DAYS);"
    notes: list[str] = []
    peer = Peer("clinic", "sqlserver", RAW["peers"]["clinic"]["dsn"])
    ctcap.install_capture(peer, Side("clinic", "dbo", "t"), notes=notes,
                       driver=fake_driver(db_responder(ct=(True, 2, "DAYS")), []))
    assert notes and "CHANGE_RETENTION = 7 DAYS" in notes[0]
    assert config_file.DEFAULTS["ct_retention_days"] == 7
    assert findings(db_responder(), source=True, retention_days=7) == []


def test_ct_on_but_invisible_to_the_login_is_a_warning_not_an_error() -> None:
    base = db_responder(ct=None)

    def respond(sql: str, params: tuple[Any, ...]) -> Any:
        if sql.strip().endswith("SELECT CHANGE_TRACKING_CURRENT_VERSION();"):
            return [(5,)]
        return base(sql, params)

    (f,) = findings(respond, source=True, retention_days=7)
    assert f.level == "warning" and "cannot see its retention" in f.what
    (off,) = findings(db_responder(ct=None), source=True, retention_days=7)
    assert off.level == "error" and off.fix.startswith(
        "ALTER DATABASE [clinic] SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 7 DAYS")
    log: list[Any] = []
    peer = Peer("clinic", "sqlserver", RAW["peers"]["clinic"]["dsn"])
    ctcap.install_capture(peer, Side("clinic", "dbo", "t"), driver=fake_driver(respond, log))
    assert not any("SET CHANGE_TRACKING = ON" in s for s, _ in log), "on already: not altered"


def test_item2_snapshot_is_required_of_sources_only() -> None:
    (f,) = findings(db_responder(snapshot="OFF"), source=True, retention_days=7)
    assert f.fix == "ALTER DATABASE [clinic] SET ALLOW_SNAPSHOT_ISOLATION ON;"
    assert findings(db_responder(snapshot="OFF"), source=False, retention_days=7) == []


# --- item 4: least-privilege grants ---------------------------------------------------------


def test_item4_missing_grants_are_named_with_the_grant_statement() -> None:
    side = Side("clinic", "dbo", "patients")
    perms = {"[dbo].[patients] VIEW CHANGE TRACKING": 0, "[sync].[db_identity] SELECT": 0}
    cur = Conn(db_responder(perms=perms), [], True).cursor()
    got = mssql_checks.tables(cur, [mssql_checks.Role(side, source=True, sink=False)], "bridge")
    assert [f.fix for f in got] == [
        "GRANT VIEW CHANGE TRACKING ON OBJECT::[dbo].[patients] TO [bridge];",
        "GRANT SELECT ON OBJECT::[sync].[db_identity] TO [bridge];",
    ]
    cur = Conn(db_responder(perms={"[sync].[ct_client] SELECT": None,
                                   "[sync].[ct_client] INSERT": None,
                                   "[sync].[ct_client] UPDATE": None}), [], True).cursor()
    (missing,) = mssql_checks.tables(cur, [mssql_checks.Role(side, True, False)], "bridge")
    assert missing.fix == "syncbridge migrate", "no such table: not a grant problem"
    sink = mssql_checks.Role(side, source=False, sink=True, identity=True)
    assert mssql_checks.required(sink) == ["SELECT", "INSERT", "UPDATE", "DELETE", "ALTER"]
    assert mssql_checks.bookkeeping(sink) == [
        ("[sync].[applied_batches]", ["SELECT", "INSERT", "DELETE"])]


# --- item 5: IDENTITY columns never in SET ----------------------------------------------------


def test_item5_identity_columns_stay_out_of_the_update() -> None:
    r = openjson.apply(shape(), "b", identity=frozenset({"big"}), identity_insert=True)
    update = [s for s in strip_comments(r.sql).split(";") if "UPDATE t SET" in s][0]
    assert "t.[big] =" not in update, "Msg 8102: cannot update identity column"
    assert "t.[small] = s.c4" in update
    insert = [s for s in strip_comments(r.sql).split(";") if "INSERT [dbo]" in s
              and "SELECT s.c0" in s][0]
    assert "[big]" in insert, "still inserted, under IDENTITY_INSERT"


# --- item 6: binary keys match ----------------------------------------------------------------


def bin_shape(key_type: str) -> catalog.LinkShape:
    """A SQL Server source (side a) keyed by `key_type`, to a Postgres sink."""
    cols_ms = {"k": catalog.Column("k", key_type, False),
               "v": catalog.Column("v", "nvarchar(max)", True)}
    cols_pg = {"k": catalog.Column("k", "bytea" if "binary" in key_type else "uuid", False),
               "v": catalog.Column("v", "text", True)}
    raw = {"peers": RAW["peers"], "links": [{"name": "l", "a": {"peer": "clinic", "table": "t"},
                                              "b": {"peer": "portal", "table": "t"},
                                              "key": ["k"], "direction": "a_to_b"}]}
    link = config.parse(raw).links["l"]
    return catalog.shape(link, catalog.Table("dbo", "t", cols_ms, ("k",)),
                         catalog.Table("public", "t", cols_pg, ("k",)),
                         check_types=mssql_types.type_checker("sqlserver", "postgres"))


def test_item6_binary_keys_are_converted_back_from_hex_in_every_key_join() -> None:
    s = bin_shape("varbinary(16)")
    for r in (openjson.rows_for_keys(s, "a"), openjson.apply(s, "a")):
        assert "t.[k] = CONVERT(varbinary(16), k.c0, 2)" in r.sql
        assert "t.[k] = k.c0" not in r.sql
        parse(r.sql)
    select = [e for e in parse(openjson.rows_for_keys(s, "a").sql) if isinstance(e, exp.Select)][0]
    conv = select.find(exp.Join).args["on"].expression
    assert isinstance(conv, exp.Convert | exp.Cast), conv
    u = bin_shape("uniqueidentifier")
    assert "t.[k] = k.c0" in openjson.rows_for_keys(u, "a").sql
    assert "c0 uniqueidentifier 'strict $.c0'" in openjson.rows_for_keys(u, "a").sql, (
        "OPENJSON types the uuid text, so the join compares uniqueidentifiers")


# --- items 9, 10: native error numbers, both forms of 547 -------------------------------------


def test_item9_native_numbers_come_from_the_diagnostic_records_not_the_text() -> None:
    pk = odbc("23000", ("Violation of PRIMARY KEY constraint 'pk'. Cannot insert duplicate key "
                        "in object 'dbo.t'. The duplicate key value is (1205).", 2627))
    assert errors.native_errors(pk) == [2627]
    assert not errors.is_odbc_transient(pk), "a key printed as (1205) is not a deadlock"
    assert pg_to_ct.row_error(pk)
    two = odbc("23000", ("The INSERT statement conflicted with the FOREIGN KEY constraint "
                         "\"fk\". (40501)", 547), ("The statement has been terminated.", 3621))
    assert errors.native_errors(two) == [547, 3621]
    assert not errors.is_odbc_transient(two)
    deadlock = odbc("40001", ("Transaction (Process ID 52) was deadlocked ...", 1205))
    assert errors.is_odbc_transient(deadlock)


def test_item10_both_forms_of_547_are_deferred_but_check_is_not() -> None:
    child = odbc("23000", ("The INSERT statement conflicted with the FOREIGN KEY constraint "
                           "\"fk_p\". The conflict occurred in database \"c\".", 547))
    parent = odbc("23000", ("The DELETE statement conflicted with the REFERENCE constraint "
                            "\"fk_p\". The conflict occurred in database \"c\".", 547))
    check = odbc("23000", ("The INSERT statement conflicted with the CHECK constraint \"ck\".",
                           547))
    assert errors.is_mssql_fk_miss(child) and errors.is_mssql_fk_miss(parent)
    assert not errors.is_mssql_fk_miss(check)
    assert not errors.is_mssql_fk_miss(odbc("23000", ("mentions FOREIGN KEY (547) only", 2627)))


# --- item 11: trailing spaces ---------------------------------------------------------------


def test_item11_text_keys_warn_about_trailing_spaces_whatever_the_collation() -> None:
    cols = {"code": catalog.Column("code", "nvarchar(20)", False)}
    table = catalog.Table("dbo", "t", cols, ("code",))
    bin2 = ctcap.key_warnings(table, ctcap.TableMeta({"code": "Latin1_General_100_BIN2"}))
    assert len(bin2) == 1 and "every collation" in bin2[0].what, "BIN2 does not help"
    assert 'CHECK ("code" = rtrim("code"))' in bin2[0].fix
    ci = ctcap.key_warnings(table, ctcap.TableMeta({"code": "SQL_Latin1_General_CP1_CI_AS"}))
    assert len(ci) == 2 and "'a' and 'A'" in ci[1].what


# --- item 12: uninstall ------------------------------------------------------------------------


def test_item12_uninstall_spares_sink_only_and_still_read_tables(monkeypatch) -> None:
    raw = {"peers": RAW["peers"], "links": [
        {"name": "one", "a": {"peer": "clinic", "table": "dbo.p"},
         "b": {"peer": "portal", "table": "p1"}, "key": ["id"], "direction": "a_to_b"},
        {"name": "two", "a": {"peer": "clinic", "table": "dbo.p"},
         "b": {"peer": "portal", "table": "p2"}, "key": ["id"], "direction": "a_to_b"},
        {"name": "three", "a": {"peer": "portal", "table": "q"},
         "b": {"peer": "clinic", "table": "dbo.q"}, "key": ["id"], "direction": "a_to_b"},
    ]}
    cfg = config.parse(raw)
    off: list[str] = []
    monkeypatch.setattr(ctcap, "uninstall_capture", lambda peer, side: off.append(side.qualified))
    monkeypatch.setattr(install.psycopg, "connect", lambda dsn: contextlib.nullcontext())
    monkeypatch.setattr(install.capture, "uninstall", lambda conn, link, side: None)
    out = list(install.uninstall(cfg, ["one", "three"]))
    assert off == [], "dbo.p is still read by link two; dbo.q is only a sink"
    assert any("another link reads it" in o for o in out)
    assert any("only a sink" in o for o in out)
    list(install.uninstall(cfg, ["one", "two"]))
    assert off == ["dbo.p"], "turned off once, when no remaining link reads it"


# --- items 16, 17: timeouts -------------------------------------------------------------------


def test_item16_connections_carry_login_query_and_lock_timeouts() -> None:
    log: list[Any] = []
    cn = mssql_odbc.connect(fake_driver(lambda s, p: None, log), "Driver={x};", False,
                    mssql_odbc.Timeouts(login=5, query=60, lock=10))
    assert (cn.login_timeout, cn.timeout) == (5, 60)
    assert log == [("SET LOCK_TIMEOUT 10000;", ())]
    assert errors.is_odbc_transient(OdbcError(
        "HYT00", "[HYT00] [Microsoft]Query timeout expired (0) (SQLExecDirectW)"))
    assert errors.is_odbc_transient(odbc("HY000", ("Lock request time out period exceeded.", 1222)))
    assert {"mssql_login_timeout", "mssql_query_timeout", "mssql_lock_timeout"} <= set(
        config_file.DEFAULTS)


# --- item 18: paged change reads -----------------------------------------------------------------


def test_item18_a_full_page_asks_for_the_next_one_after_its_last_key() -> None:
    peer, log = make_peer(ct_responder())
    s = shape()
    first = run(peer.read_changes(s, "b", chg.CtCursor(5, IDENT), b"x" * 16, limit=2))
    assert first.next_after == {"id": uuid.UUID(UID), "k2": 2}
    run(peer.read_changes(s, "b", chg.CtCursor(5, IDENT), b"x" * 16, after=first.next_after,
                          upto=first.new_cursor.version, limit=2))
    sql, params = [(x, p) for x, p in log if "CHANGETABLE" in x][-1]
    assert params == (5, b"x" * 16, 10, 2, UID.lower(), 2)
    assert "AND ((ct.[id] > @k0)\n    OR (ct.[id] = @k0 AND ct.[k2] > @k1))" in sql
    reads = [x for x, _ in log if "MIN_VALID" in x]
    assert len(reads) == 3, "the second page reuses the window: no new bound read"
    run(peer.close())


# --- item 22: APP=, CLR types, no-op updates ----------------------------------------------------


def test_item22_app_name_is_added_once() -> None:
    assert mssql_odbc.with_app_name("Driver={x};Server=s;") == "Driver={x};Server=s;APP=syncbridge;"
    assert mssql_odbc.with_app_name("Driver={x};APP=mine") == "Driver={x};APP=mine"
    peer, _ = make_peer(lambda s, p: None)
    assert peer.conn_str.endswith(";APP=syncbridge;")


def test_item22_clr_types_reach_the_type_check_and_are_refused_by_name() -> None:
    sql = q.static("table_columns").sql
    assert "JOIN sys.types AS ty ON ty.user_type_id = c.user_type_id" in sql
    assert "ty.user_type_id = c.system_type_id" not in sql
    parse(sql)
    for t in ("hierarchyid", "geometry", "geography"):
        why = mssql_types.explain("sqlserver", t, "postgres", "bytea")
        assert why and t in why


def test_item22_updates_skip_rows_that_are_already_equal_comparing_bytes() -> None:
    r = openjson.apply(shape(), "b")
    update = [s for s in strip_comments(r.sql).split(";") if "UPDATE t SET" in s][0]
    assert "WHERE EXISTS (SELECT CAST(s.c2 AS varbinary(max)), s.c3" in update
    assert "EXCEPT SELECT CAST(t.[name] AS varbinary(max)), t.[flag]" in update
    assert "CAST(t.[paid_at] AS varbinary(max))" in update, "offset-only changes still written"
    tree = sqlglot.parse_one(update.replace("WITH CHANGE_TRACKING_CONTEXT (@ctx)", ""),
                             read="tsql")
    assert tree.find(exp.Except) is not None


def test_item20_applied_batches_are_pruned_and_not_clustered_on_a_random_uuid() -> None:
    assert "DELETE TOP (5000) FROM [sync].[applied_batches]" in q.static("prune_applied").sql
    parse(q.static("prune_applied").sql)
    from test_mssql_sql import ROOT

    text = (ROOT / "migrations" / "sqlserver" / "0002_restore_record.sql").read_text()
    assert "PRIMARY KEY NONCLUSTERED (batch_id)" in text
    assert "CREATE CLUSTERED INDEX applied_batches_applied_at" in text


def test_item13_the_restore_record_is_written_before_the_sink_commit() -> None:
    peer, log = make_peer(lambda s, p: None)
    run(peer.record_client_version("patients", "b", 42))
    sql, params = log[-2]
    assert "[sync].[ct_client]" in sql and params == ("patients", "b", 42)
    assert log[-1] == ("COMMIT", ())
    run(peer.close())


def test_changes_page_statement_parses() -> None:
    r = q.changes(shape(), "b", first=False)
    assert r.params == ("last", "ctx", "upto", "n", "k0", "k1")
    assert strip_comments(r.sql).count("?") == len(r.params)
    assert any(isinstance(e, exp.Select) for e in parse(r.sql))


# --- item 19: one poll per peer ---------------------------------------------------------------


def test_item19_links_of_one_peer_share_one_poll() -> None:
    a, b = Side("clinic", "dbo", "a"), Side("clinic", "dbo", "b")

    def respond(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        if "FROM (VALUES" in sql:
            return [(i, 42, 3 + i, None) for i in range(len(params))]
        return None

    peer, log = make_peer(respond)
    peer.poll_max_age = 60.0

    async def ticks() -> list[Any]:
        first = await asyncio.gather(peer.poll_version(a), peer.poll_version(b))
        again = [await peer.poll_version(a), await peer.poll_version(b)]
        return [*first, *again]

    got = asyncio.run(ticks())
    assert got == [(42, 3, None), (42, 4, None)] * 2
    polls = [(sql, p) for sql, p in log if "FROM (VALUES" in sql]
    assert [p for _, p in polls] == [("[dbo].[a]",), ("[dbo].[a]", "[dbo].[b]")], (
        "b joined while a's poll was in flight, then both in one statement; the later "
        "ticks were answered from that poll")
    assert "CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(v.obj))" in polls[-1][0]
    peer.poll_max_age = 0.0
    asyncio.run(peer.poll_version(a))
    assert len([s for s, _ in log if "FROM (VALUES" in s]) == 3, "stale: polled again"
    run(peer.close())
