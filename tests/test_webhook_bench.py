"""`syncbridge bench --only webhooks` end to end, for two seconds.

The bench starts the webhook app in a child process by importing a module
path; when that path went stale (bridge/bench/webhooks.py moved) the child
died at once and the bench reported only "the webhook app did not become
healthy". This runs the real child and requires every delivery to be
accepted and then drained into the bench's scratch table, which is removed.
"""

from __future__ import annotations

import psycopg
from webhook_support import migrate

from syncbridge.bridge.bench.webhooks import run_webhook_bench


def test_webhook_bench_accepts_and_drains_every_delivery(new_db):
    dsn = new_db("whbench")
    migrate(dsn)
    result = run_webhook_bench(dsn, seconds=2, concurrency=2)
    assert result["requests"] > 0
    assert result["statuses"] == {202: result["requests"]}
    assert result["drained"] == result["drained_rows"] == result["requests"]
    with psycopg.connect(dsn) as c:
        assert c.execute("select to_regnamespace('syncbridge_bench')").fetchone() == (None,)
        assert c.execute("select count(*) from sync.webhook_events "
                         "where source = 'bench'").fetchone() == (0,)
