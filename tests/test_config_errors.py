"""Bad configuration: one clear error naming the link, the peer and the column."""

from __future__ import annotations

import pytest

from rigs import link
from syncbridge.bridge.cli import main
from syncbridge.bridge.rig import Rig
from syncbridge.engine.config import ConfigError, parse
from syncbridge.engine.validate import shapes

A = "create table t (id int primary key, name text, amount numeric(12,2), ts timestamptz);"


def _rig(new_db, tmp_path, schema_b, **linkopts):
    rig = Rig(tmp_path, new_db("a"), new_db("b"), [link("t", "t", ["id"], **linkopts)])
    rig.execute("a", A)
    if schema_b:
        rig.execute("b", schema_b)
    return rig


@pytest.mark.parametrize("schema_b, linkopts, message", [
    (None, {}, "link 't': table public.t does not exist on peer 'b'"),
    ("create table t (id int, name text, amount numeric(12,2), ts timestamptz);", {},
     "link 't': table public.t on peer 'b' has no primary key"),
    ("create table t (id int primary key, amount numeric(12,2), ts timestamptz);", {},
     "link 't': column 'name' does not exist in public.t on peer 'b'"),
    (A, {"columns": {"id": "id", "nme": "name"}},
     "link 't': column 'nme' does not exist in public.t on peer 'a'"),
    ("create table t (id int primary key, name text, amount numeric(6,2), ts timestamptz);", {},
     "link 't': column amount (numeric(12,2)) on peer 'a' and column amount (numeric(6,2)) "
     "on peer 'b' have incompatible types"),
    ("create table t (id int primary key, name text, amount numeric(12,2), ts date);", {},
     "column ts (timestamp with time zone) on peer 'a' and column ts (date)"),
    ("create table t (id int, name text primary key, amount numeric(12,2), ts timestamptz);",
     {}, "key ['id'] must be the primary key of both tables"),
])
def test_catalog_errors_name_link_peer_column(new_db, tmp_path, schema_b, linkopts, message):
    rig = _rig(new_db, tmp_path, schema_b, **linkopts)
    with pytest.raises(ConfigError) as e:
        shapes(rig.config)
    assert message in str(e.value)


def test_cli_reports_config_error_and_starts_nothing(new_db, tmp_path, capsys):
    rig = _rig(new_db, tmp_path, "create table t (id int primary key);")
    assert main(["--config", str(rig.config_path), "run"]) == 2
    err = capsys.readouterr().err
    assert "config error: link 't': column 'name' does not exist in public.t on peer 'b'" in err


@pytest.mark.parametrize("raw, message", [
    ({}, "config names no [peers]"),
    ({"peers": {"a": {"dialect": "oracle", "dsn": "x"}}}, "dialect 'oracle' is not one of"),
    ({"peers": {"a": {"dsn_env": "SYNC_TEST_UNSET_VAR"}}},
     "peer 'a': environment variable SYNC_TEST_UNSET_VAR is not set"),
    ({"peers": {"a": {"dsn": "x"}}, "links": [{"name": "l", "a": {"peer": "a", "table": "t"},
      "b": {"peer": "zz", "table": "t"}, "key": ["id"]}]}, "side b names unknown peer 'zz'"),
    ({"peers": {"a": {"dsn": "x"}}, "links": [{"name": "l", "a": {"peer": "a", "table": "t"},
      "b": {"peer": "a", "table": "u"}, "key": ["id"], "direction": "sideways"}]},
     "link 'l': direction 'sideways'"),
    ({"peers": {"a": {"dsn": "x"}}, "bridge": {"batchsize": 5}}, "unknown settings: batchsize"),
])
def test_config_shape_errors(raw, message):
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert message in str(e.value)
