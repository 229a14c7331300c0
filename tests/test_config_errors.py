"""Bad configuration: one clear error naming the link, the peer and the column."""

from __future__ import annotations

import pytest

from rigs import Rig, link
from syncbridge.bridge.cli import main
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


_LINK = {"name": "l", "a": {"peer": "a", "table": "t"}, "b": {"peer": "a", "table": "u"},
         "key": ["id"], "direction": "both"}


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
    ({"peers": {"a": {"dsn": "x"}}, "bridge": {"batchsize": 5}},
     "[bridge]: unknown key 'batchsize' (did you mean 'batch_size'?)"),
    ({"peers": {"a": {"dsn": "x"}}, "links": [_LINK | {"conflcit": "manual"}]},
     "link 'l': unknown key 'conflcit' (did you mean 'conflict'?)"),
    ({"peers": {"a": {"dsn": "x", "dialcet": "postgres"}}},
     "peer 'a': unknown key 'dialcet' (did you mean 'dialect'?)"),
    ({"peers": {"a": {"dsn": "x"}}, "links": [_LINK | {"batch_size": "500"}]},
     "link 'l': batch_size = '500': Input should be a valid integer"),
    ({"peers": {"a": {"dsn": "x"}}, "links": [_LINK | {"conflict": "function:resolve"}]},
     "or function:<schema>.<function>"),
    ({"peers": {"a": {"dsn": "x"}}, "links": [_LINK | {"merge_fallback": "merge"}]},
     "link 'l': merge_fallback 'merge' is not one of"),
    ({"peers": {"a": {"dsn": "x"}}, "links": [_LINK | {"check_every": "soon"}]},
     "'soon' is not a duration"),
    ({"peers": {"a": {"dsn": "x"}}, "rules": [{"name": "r", "sql": "select 1", "pear": "a"}]},
     "rule 'r': unknown key 'pear' (did you mean 'peer'?)"),
    ({"peers": {"a": {"dsn": "x"}}, "webhooks": {"max_body": 5}},
     "[webhooks]: unknown key 'max_body' (did you mean 'max_body_bytes'?)"),
    ({"peers": {"a": {"dsn": "x"}}, "webhooks": {"sources": {"s": {
        "provider": "hmac", "header": "h", "secret_env": "X",
        "topics": [{"topic": "t", "link": "l", "side": "a", "key": "id",
                    "colums": {"id": "id"}}]}}}},
     "webhook source 's' topic 't': unknown key 'colums' (did you mean 'columns'?)"),
    ({"peers": {"a": {"dsn": "x", "dsn_env": "Y"}}}, "needs exactly one of dsn, dsn_env"),
    ({"paers": {}}, "config: unknown key 'paers' (did you mean 'peers'?)"),
])
def test_config_shape_errors(raw, message):
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert message in str(e.value)


def test_bridge_settings_are_every_links_defaults():
    """[bridge] batch_size / notify / conflict apply to links that do not set their own."""
    cfg = parse({"peers": {"a": {"dsn": "x"}},
                 "bridge": {"batch_size": 7, "notify": False, "conflict": "manual"},
                 "links": [_LINK, _LINK | {"name": "own", "batch_size": 9, "notify": True,
                                           "conflict": "b_wins"}]})
    inherited, own = cfg.links["l"], cfg.links["own"]
    assert (inherited.batch_size, inherited.notify, inherited.conflict) == (7, False, "manual")
    assert (own.batch_size, own.notify, own.conflict) == (9, True, "b_wins")
    assert cfg.setting("batch_size") == 7 and cfg.setting("fallback_poll") == 300.0


def test_new_link_keys_have_their_defaults():
    cfg = parse({"peers": {"a": {"dsn": "x"}},
                 "links": [_LINK, _LINK | {"name": "m", "conflict": "merge",
                                           "merge_fallback": "b_wins", "check_every": "15m",
                                           "repair": "auto"},
                           _LINK | {"name": "f", "conflict": "function:sync_fn.pick"}]})
    assert cfg.links["l"].merge_fallback == "a_wins" and cfg.links["l"].check_every is None
    assert cfg.links["m"].merge_fallback == "b_wins" and cfg.links["m"].check_every == 900
    assert cfg.links["m"].repair == "auto"
    assert cfg.links["f"].conflict == "function:sync_fn.pick"


def test_credential_outside_systemd_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    raw = {"peers": {"a": {"dsn_credential": "portal-dsn"}}}
    with pytest.raises(ConfigError, match="--credentials-dir"):
        parse(raw)
    (tmp_path / "portal-dsn").write_text("postgresql://x@h/db\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert parse(raw).peers["a"].dsn == "postgresql://x@h/db"


def test_misspelled_key_stops_install_from_the_cli(tmp_path, capsys):
    """`conflcit = "manual"` used to install fine and run with a_wins."""
    path = tmp_path / "s.toml"
    path.write_text('[peers.a]\ndsn = "postgresql://x@127.0.0.1:1/db"\n\n[[links]]\n'
                    'name = "l"\na = { peer = "a", table = "t" }\nb = { peer = "a", table = "u" }\n'
                    'key = ["id"]\nconflcit = "manual"\n')
    assert main(["install", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"syncbridge: config error: {path}: link 'l': unknown key 'conflcit' "
                   "(did you mean 'conflict'?)")


def test_install_refuses_a_not_null_sink_column_the_link_does_not_fill(new_db, tmp_path):
    schema_b = A.replace("ts timestamptz", "ts timestamptz, clinic_code text not null")
    rig = _rig(new_db, tmp_path, schema_b, columns={"id": "id", "name": "name",
                                                    "amount": "amount", "ts": "ts"})
    from syncbridge.engine.install import install
    from syncbridge.engine.migrate import migrate

    migrate(rig.config)
    with pytest.raises(ConfigError) as e:
        list(install(rig.config))
    assert ("link 't': column 'clinic_code' of public.t on peer 'b' is NOT NULL without a "
            "default and the link does not fill it") in str(e.value)
    rig.execute("b", "alter table t alter column clinic_code set default 'main'")
    assert list(install(rig.config))


@pytest.mark.parametrize("name", ["two-postgres.toml", "one-database-column-map.toml",
                                  "webhooks-only.toml", "compose.toml"])
def test_shipped_examples_are_valid(name, monkeypatch, tmp_path):
    from pathlib import Path

    from syncbridge.engine.config import load
    from syncbridge.engine.webhooks.config import parse_webhooks

    for var in ("PORTAL_DSN", "CLINIC_DSN", "LMS_DSN"):
        monkeypatch.setenv(var, "postgresql://x@127.0.0.1:1/db")
    for cred in ("portal-dsn", "clinic-dsn", "shop-dsn", "shopify-secret", "thinkific-secret"):
        (tmp_path / cred).write_text("postgresql://x@127.0.0.1:1/db")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load(Path(__file__).parent.parent / "examples" / name)
    parse_webhooks(config)
    assert config.links or config.webhooks.sources


def test_readme_sample_config_is_valid_and_lists_every_bridge_default(monkeypatch):
    import re
    import tomllib
    from pathlib import Path

    from syncbridge.engine.config_file import DEFAULTS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("### Configuration", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("PORTAL_DSN", "postgresql://x@h/p")
    monkeypatch.setenv("CLINIC_DSN", "postgresql://x@h/c")
    config = parse(tomllib.loads(block))
    assert config.settings == DEFAULTS
    listed = set(re.findall(r"^#? ?(\w+) = ", block.split("[peers.portal]")[0], re.M))
    assert set(DEFAULTS) <= listed, set(DEFAULTS) - listed
