"""Retention ([bridge] *_days): the running bridge prunes sync.applied_batches on
Postgres sinks, sync.check_runs (never a name's last run) and resolved conflicts.
Was: the prune query existed and nothing called it."""

from __future__ import annotations

from heal_support import until
from rigs import link, make_rig

SCHEMA = "create table items (id int primary key, v text not null);"
OLD = "clock_timestamp() - interval '8 days'"


def test_the_bridge_prunes_old_records_and_keeps_recent_ones(new_db, tmp_path):
    rig = make_rig(new_db, tmp_path, SCHEMA, [link("items", "items", ["id"], "a_to_b")],
                   {"prune_interval": 1.0, "applied_batches_days": 7, "check_runs_days": 7,
                    "resolved_conflicts_days": 7})
    try:
        rig.execute("b", f"""
            insert into sync.applied_batches (batch_id, link, source_side, signals, upserts,
                                              deletes, applied_at)
            values (gen_random_uuid(), 'items', 'a', 1, 1, 0, {OLD}),
                   (gen_random_uuid(), 'items', 'a', 1, 1, 0, clock_timestamp())""")
        rig.execute("a", f"""
            insert into sync.check_runs (kind, name, verdict, started_at)
            values ('link', 'items', 'equal', {OLD}), ('link', 'items', 'equal', {OLD}),
                   ('rule', 'r', 'ok', {OLD});
            insert into sync.conflicts (link, key, policy, status, resolved_at, batch_id)
            values ('items', '{{"id": 1}}', 'manual', 'resolved', {OLD}, gen_random_uuid()),
                   ('items', '{{"id": 2}}', 'manual', 'resolved', clock_timestamp(),
                    gen_random_uuid()),
                   ('items', '{{"id": 3}}', 'manual', 'open', null, gen_random_uuid())""")
        rig.start_bridge()
        until(lambda: rig.query("b", "select count(*) from sync.applied_batches") == [(1,)],
              15, "the old applied batch pruned")
        until(lambda: rig.query("a", "select count(*) from sync.conflicts") == [(2,)],
              15, "the old resolved conflict pruned")
        assert rig.query("a", "select key from sync.conflicts order by key") == [
            ({"id": 2},), ({"id": 3},)]
        # each name keeps its last run, however old
        assert rig.query("a", "select kind, name, count(*) from sync.check_runs "
                              "group by 1, 2 order by 1, 2") == [("link", "items", 1),
                                                                  ("rule", "r", 1)]
        assert "event=pruned table=applied_batches" in rig.log_text()
    finally:
        rig.close()
