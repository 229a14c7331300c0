"""Every T-SQL statement the engine can emit, rendered for the representative link
and parsed with sqlglot's T-SQL dialect (no SQL Server runs here).

sqlglot 30 cannot parse three pieces of T-SQL this engine must use; the shim
below rewrites exactly those, after asserting they are present and well
placed, and nothing else:
- `WITH CHANGE_TRACKING_CONTEXT (@ctx)` before a DML statement (removed);
- `CHANGETABLE(CHANGES t, @last)` (rewritten to the table function CHANGETABLE(t, @last));
- ALTER DATABASE ... / ALTER TABLE ... CHANGE_TRACKING and SET IDENTITY_INSERT
  come back as a generic `Command` (sqlglot has no AST for them): allowed only there.
"""

from __future__ import annotations

import re
from pathlib import Path

import mssql_shape
import pytest
import sqlglot
import sqlparse
from mssql_shape import COLUMNS, KEY, TABLE, shape
from sqlglot import exp

from syncbridge.engine.config import Side
from syncbridge.engine.sqlserver import openjson
from syncbridge.engine.sqlserver import sql as q

ROOT = Path(__file__).resolve().parent.parent
CTX = "WITH CHANGE_TRACKING_CONTEXT (@ctx)"
COMMAND_OK = {"enable_db_snapshot", "enable_db_ct", "disable_db_ct", "enable_table_ct",
              "set_db_retention",
              "disable_table_ct", "apply_identity_cursor"}
STATEMENTS = mssql_shape.all_statements(shape(), "b")


def strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def shim(sql: str) -> str:
    """Rewrite only what sqlglot cannot parse (see the module docstring)."""
    body = strip_comments(sql)
    for m in re.finditer(re.escape(CTX), body):
        before = body[: m.start()].rstrip()
        assert before.endswith(";"), "WITH CHANGE_TRACKING_CONTEXT must follow a ';'"
        after = body[m.end():].lstrip()
        assert after.startswith(("UPDATE ", "INSERT ", "DELETE ")), after[:40]
    body = body.replace(CTX + "\n", "")
    return body.replace("CHANGETABLE(CHANGES ", "CHANGETABLE(")


def parse(sql: str) -> list[exp.Expression]:
    return [e for e in sqlglot.parse(shim(sql), read="tsql") if e is not None]


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_every_statement_parses_as_tsql(name: str) -> None:
    r = STATEMENTS[name]
    tree = parse(r.sql)
    assert tree, name
    commands = [e for e in tree if isinstance(e, exp.Command)]
    if name not in COMMAND_OK:
        assert not commands, f"{name}: sqlglot fell back to Command for {commands}"
    assert strip_comments(r.sql).count("?") == len(r.params), name
    # reference: "keep every statement ending in ';'"
    assert strip_comments(r.sql).rstrip().endswith(";"), name


def test_qi_doubles_closing_brackets_and_refuses_junk() -> None:
    assert q.qi("we]ird") == "[we]]ird]"
    assert q.qi("a[b") == "[a[b]"
    assert q.qualified("dbo", "x y") == "[dbo].[x y]"
    for bad in ("", "a\x00b", "x" * 129):
        with pytest.raises(ValueError):
            q.qi(bad)
    tree = sqlglot.parse_one(f"SELECT t.{q.qi('col]x')} FROM {q.qualified('dbo', TABLE)} AS t",
                             read="tsql")
    assert tree.find(exp.Table).name == TABLE
    assert tree.find(exp.Column).name == "col]x"


def test_splicing_refuses_anything_but_names_and_types() -> None:
    with pytest.raises(ValueError):
        q.sql_type("int; DROP TABLE x")
    with pytest.raises(ValueError):
        q.collate("Latin1 ) ; DROP")
    with pytest.raises(ValueError):
        q.enable_db_ct("clinic", 7, "WEEKS")
    assert q.sql_type("decimal(18, 4)") == "decimal(18,4)"


# --- change tracking setup: forms from reference §1.1 ---------------------------------------


def test_setup_statements_match_reference_forms() -> None:
    side = Side("clinic", "dbo", "patients")
    assert strip_comments(q.enable_db_snapshot("clinic").sql).strip() == (
        "ALTER DATABASE [clinic] SET ALLOW_SNAPSHOT_ISOLATION ON;")
    assert strip_comments(q.enable_db_ct("clinic", 7, "days").sql).strip() == (
        "ALTER DATABASE [clinic] SET CHANGE_TRACKING = ON "
        "(CHANGE_RETENTION = 7 DAYS, AUTO_CLEANUP = ON);")
    assert strip_comments(q.enable_table_ct(side).sql).strip() == (
        "ALTER TABLE [dbo].[patients] ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF);")
    assert strip_comments(q.disable_table_ct(side).sql).strip() == (
        "ALTER TABLE [dbo].[patients] DISABLE CHANGE_TRACKING;")
    assert strip_comments(q.disable_db_ct("clinic").sql).strip() == (
        "ALTER DATABASE [clinic] SET CHANGE_TRACKING = OFF;")
    assert q.side_name(side) == "[dbo].[patients]"


def test_idempotence_checks_query_the_catalog_views_of_reference() -> None:
    checks = {
        "db_ct_state": "sys.change_tracking_databases",
        "table_ct_state": "sys.change_tracking_tables",
        "db_snapshot_state": "sys.databases",
        "table_pk": "sys.key_constraints",
    }
    for name, view in checks.items():
        tree = parse(q.static(name).sql)[0]
        tables = {f"{t.db}.{t.name}" for t in tree.find_all(exp.Table)}
        assert view in tables, name
    assert "OBJECT_ID(?)" in q.static("table_ct_state").sql
    assert "type = 'PK'" in q.static("table_pk").sql


def test_poll_and_versions() -> None:
    # the idle poll carries the table's min valid version too (issue 18 item 14)
    assert " ".join(strip_comments(q.static("poll").sql).split()) == (
        "SELECT CHANGE_TRACKING_CURRENT_VERSION() AS cur_v, "
        "CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(?)) AS min_v, "
        "(SELECT o.modify_date FROM sys.objects AS o WHERE o.object_id = OBJECT_ID(?)) "
        "AS altered;")
    assert q.static("poll").params == ("object", "object")
    v = parse(q.static("versions").sql)[0]
    names = [e.alias for e in v.expressions]
    assert names == ["cur_v", "min_v"]
    assert "CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(?))" in q.static("versions").sql


# --- the change read (§1.4, §1.5) ------------------------------------------------------------


def test_changes_read_joins_current_values_and_filters_own_context() -> None:
    r = STATEMENTS["changes"]
    assert r.params == ("last", "ctx", "upto", "n")
    assert "DECLARE @last bigint = ?, @ctx varbinary(128) = ?, @upto bigint = ?, @n int = ?;" \
        in r.sql
    assert f"CHANGETABLE(CHANGES [dbo].[{TABLE.replace(']', ']]')}], @last) AS ct" in r.sql
    assert "WHERE (ct.SYS_CHANGE_CONTEXT IS NULL OR ct.SYS_CHANGE_CONTEXT <> @ctx)\n" \
        "   AND ct.SYS_CHANGE_VERSION <= @upto\n ORDER BY ct.[id], ct.[k2];" in r.sql
    select = [e for e in parse(r.sql) if isinstance(e, exp.Select)][0]
    join = select.args["joins"][0]
    assert join.side == "LEFT", "an INNER JOIN would lose deletes (reference §7.6)"
    on_cols = {(c.table, c.name) for c in join.args["on"].find_all(exp.Column)}
    assert on_cols == {("t", "id"), ("ct", "id"), ("t", "k2"), ("ct", "k2")}
    projected = select.expressions
    # version, operation, presence, then every linked column in shape order
    assert len(projected) == 3 + len(COLUMNS)
    keys = [p for p in projected[3:3 + len(KEY)]]
    assert [(k.table, k.name) for k in keys] == [("ct", "id"), ("ct", "k2")], "keys from ct"
    others = projected[3 + len(KEY):]
    assert all(
        ("t" in {c.table for c in o.find_all(exp.Column)}) for o in others
    ), "values from the table, never from CHANGETABLE"
    assert "CAST(t.[paid_at] AS nvarchar(40))" in r.sql, "datetimeoffset read as text (§2.5)"


# --- the apply batch (§2.1) ------------------------------------------------------------------


def test_apply_batch_structure() -> None:
    r = STATEMENTS["apply"]
    body = strip_comments(r.sql)
    assert r.params == openjson.APPLY_PARAMS
    assert body.lstrip().startswith("SET NOCOUNT ON; SET XACT_ABORT ON;")
    tree = parse(r.sql)
    kinds = [type(e).__name__ for e in tree]
    # DELETE first, as the Postgres sink does: a key change must free the old row's
    # UNIQUE values before the new key's INSERT (issue 18 item 8, Msg 2601)
    assert kinds == ["Set", "Set", "Declare", "Declare", "Declare", "Insert", "Delete", "Set",
                     "Update", "Set", "Insert", "Set", "Insert", "Select"]
    assert isinstance(tree[-1], exp.Select)
    assert [e.alias for e in tree[-1].expressions] == ["updated", "inserted", "deleted"]
    # every DML on the user table carries the echo context, and only those do
    target = f"[dbo].[{TABLE.replace(']', ']]')}]"
    statements = [s.strip() for s in body.split(";") if s.strip()]
    dml = [s for s in statements if s.startswith(CTX)]
    assert len(dml) == 3
    assert [s[len(CTX):].split()[0] for s in dml] == ["DELETE", "UPDATE", "INSERT"]
    assert all(target in s for s in dml)
    for s in statements:
        if target in s and not s.startswith("DECLARE"):
            assert s.startswith(CTX), s[:60]
    # UPDLOCK, SERIALIZABLE on the update and on the insert's existence check
    update = tree[8]
    hints = [h for t in update.find_all(exp.Table) for h in (t.args.get("hints") or [])]
    assert {v.name for h in hints for v in h.expressions} == {"UPDLOCK", "SERIALIZABLE"}
    insert = tree[10]
    sub_hints = [v.name for t in insert.find_all(exp.Table)
                 for h in (t.args.get("hints") or []) for v in h.expressions]
    assert sub_hints == ["UPDLOCK", "SERIALIZABLE"]
    assert insert.find(exp.Exists) is not None and "NOT EXISTS" in body
    # the batch record is written in the same batch, after the data
    record = tree[12]
    assert record.this.this.name == "applied_batches"
    assert "@u + @i, @d" in body


def test_apply_stages_json_with_strict_paths_and_exact_types() -> None:
    body = strip_comments(STATEMENTS["apply"].sql)
    n = len(COLUMNS)
    for i in range(n):
        assert f"'strict $.c{i}'" in body
    assert "c13 varchar(max) 'strict $.c13'" in body, "binary arrives as hex text"
    assert "CONVERT(varbinary(max), c13, 2)" in body, "style 2 = hex without 0x (§2.1)"
    assert "c6 decimal(18,4) 'strict $.c6'" in body
    assert "c10 datetimeoffset(6) 'strict $.c10'" in body
    assert "c2 nvarchar(max) 'strict $.c2'" in body
    assert "PRIMARY KEY (c0, c1)" in body, "duplicate keys fail in @src, not in the table"
    assert "MERGE" not in body and "OFFSET" not in body


def test_apply_with_cursor_and_identity_insert() -> None:
    r = STATEMENTS["apply_identity_cursor"]
    body = strip_comments(r.sql)
    target = f"[dbo].[{TABLE.replace(']', ']]')}]"
    on = body.index(f"SET IDENTITY_INSERT {target} ON;")
    ins = body.index(f"INSERT {target}")
    off = body.index(f"SET IDENTITY_INSERT {target} OFF;")
    assert on < ins < off, "IDENTITY_INSERT is ON only around the insert, same batch"
    assert "UPDATE [sync].[ct_cursor] WITH (UPDLOCK, SERIALIZABLE)" in body
    assert "INSERT [sync].[ct_cursor]" in body
    assert body.index("[sync].[ct_cursor]") < body.index("[sync].[applied_batches]")
    assert body.rstrip().endswith("SELECT @u AS updated, @i AS inserted, @d AS deleted;")


def test_apply_collations_are_spliced_on_staging_and_joins() -> None:
    s = shape()
    r = openjson.apply(s, "b", collations={"name": "Latin1_General_100_BIN2"})
    assert "c2 nvarchar(max) COLLATE Latin1_General_100_BIN2" in r.sql
    parse(r.sql)


def test_key_only_table_has_no_update() -> None:
    from syncbridge.engine import catalog

    s = shape()
    slim = catalog.LinkShape(s.link, s.a, s.b, s.key_pairs())
    r = openjson.apply(slim, "b")
    assert "UPDATE t SET" not in r.sql
    parse(r.sql)


# --- resync reads ----------------------------------------------------------------------------


def test_keys_pages_are_keyset_paginated() -> None:
    first, nxt = STATEMENTS["keys_first_page"], STATEMENTS["keys_next_page"]
    assert first.params == ("n",) and nxt.params == ("n", "k0", "k1")
    for r in (first, nxt):
        sel = [e for e in parse(r.sql) if isinstance(e, exp.Select)][0]
        assert "OFFSET" not in strip_comments(r.sql).upper() and sel.find(exp.Offset) is None
        assert [o.this.name for o in sel.args["order"].expressions] == list(KEY)
        assert "TOP (@n)" in r.sql
    sel = [e for e in parse(nxt.sql) if isinstance(e, exp.Select)][0]
    where = sel.args["where"].this
    assert isinstance(where, exp.Or)
    assert "DECLARE @n int = ?, @k0 uniqueidentifier = ?, @k1 int = ?;" in nxt.sql
    assert "(t.[id] > @k0)" in nxt.sql and "(t.[id] = @k0 AND t.[k2] > @k1)" in nxt.sql


def test_rows_for_keys_joins_openjson_keys() -> None:
    r = STATEMENTS["rows_for_keys"]
    assert r.params == ("keys",)
    assert "OPENJSON(@keys) WITH (c0 uniqueidentifier 'strict $.c0', c1 int 'strict $.c1')" \
        in r.sql


# --- migrations ----------------------------------------------------------------------------


def sql_statements(path: Path) -> list[str]:
    """Split as yoyo does (sqlparse.split), without comment-only chunks."""
    return [s for s in sqlparse.split(path.read_text()) if strip_comments(s).strip()]


@pytest.mark.parametrize("name", ["0001_bridge_objects.sql", "0001_bridge_objects.rollback.sql",
                                  "0002_restore_record.sql",
                                  "0002_restore_record.rollback.sql",
                                  "0003_two_way_state.sql",
                                  "0003_two_way_state.rollback.sql"])
def test_sqlserver_migrations_parse_and_have_no_go(name: str) -> None:
    path = ROOT / "migrations" / "sqlserver" / name
    text = path.read_text()
    assert not re.search(r"^\s*GO\s*$", text, re.MULTILINE | re.IGNORECASE)
    assert "ALTER DATABASE" not in strip_comments(text), "Msg 226: never inside a migration"
    stmts = sql_statements(path)
    assert stmts
    for s in stmts:
        tree = sqlglot.parse(strip_comments(s), read="tsql")
        assert not any(isinstance(e, exp.Command) for e in tree if e is not None), s[:80]


def test_sqlserver_migration_objects_match_what_the_batch_writes() -> None:
    text = (ROOT / "migrations" / "sqlserver" / "0001_bridge_objects.sql").read_text()
    creates = {}
    for s in sql_statements(ROOT / "migrations" / "sqlserver" / "0001_bridge_objects.sql"):
        tree = sqlglot.parse_one(strip_comments(s), read="tsql")
        if isinstance(tree, exp.Create) and tree.kind == "TABLE":
            table = tree.this.this
            creates[table.name] = {c.name for c in tree.this.expressions
                                   if isinstance(c, exp.ColumnDef)}
    assert creates["applied_batches"] >= {"batch_id", "link", "source_side", "signals",
                                          "upserts", "deletes", "applied_at"}
    assert creates["ct_cursor"] >= {"link", "source_side", "version", "db_identity",
                                    "updated_at"}
    assert "id" in creates["db_identity"]
    assert "batch_id    uniqueidentifier NOT NULL" in text
    assert "datetime2(6)" in text and "TIMESTAMP" not in text.upper().replace("DATETIME", "")


def test_two_way_state_tables_have_what_the_statements_write() -> None:
    path = ROOT / "migrations" / "sqlserver" / "0003_two_way_state.sql"
    creates = {}
    for s in sql_statements(path):
        tree = sqlglot.parse_one(strip_comments(s), read="tsql")
        if isinstance(tree, exp.Create) and tree.kind == "TABLE":
            creates[tree.this.this.name] = {c.name for c in tree.this.expressions
                                            if isinstance(c, exp.ColumnDef)}
    assert creates["row_state"] == {"link", "key_hash", "key", "image", "known", "synced_at"}
    assert creates["resend"] == {"link", "source_side", "key_hash", "key", "queued_at"}
    two_way = STATEMENTS["apply_two_way"].sql
    # the bases and resends go in the batch's own transaction, before its record
    assert two_way.index("[sync].[row_state]") < two_way.index("[sync].[applied_batches]")
    assert two_way.index("[sync].[resend]") < two_way.index("[sync].[applied_batches]")
    assert "[sync].[row_state]" not in STATEMENTS["apply"].sql, "one-way links keep none"
    # one hash of the key text everywhere, so a lookup finds what a write stored
    for name in ("apply_two_way", "state_read", "state_write", "resend_done", "resend_request"):
        assert "CONVERT(binary(32), HASHBYTES('SHA2_256'," in STATEMENTS[name].sql, name
    read = strip_comments(STATEMENTS["state_read"].sql)
    assert "WITH (UPDLOCK, HOLDLOCK)" in read and "COMMIT" not in read.upper()


def test_postgres_ct_cursor_migration() -> None:
    path = ROOT / "migrations" / "postgres" / "0003_ct_cursor.sql"
    text = path.read_text()
    assert text.splitlines()[0] == "-- depends: 0001_sync_schema"
    tree = sqlglot.parse_one(strip_comments(text), read="postgres")
    assert isinstance(tree, exp.Create)
    cols = {c.name: c.args["kind"].sql("postgres").lower()
            for c in tree.this.expressions if isinstance(c, exp.ColumnDef)}
    assert cols == {"link": "text", "source_side": "char(1)", "version": "bigint",
                    "db_identity": "text", "updated_at": "timestamptz"}
    pk = tree.find(exp.PrimaryKey)
    assert [e.name for e in pk.expressions] == ["link", "source_side"]
    rollback = (ROOT / "migrations" / "postgres" / "0003_ct_cursor.rollback.sql").read_text()
    assert "drop table if exists sync.ct_cursor;" in rollback
