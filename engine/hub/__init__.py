"""Everything the bridge does on the hub, over named SQL in sql/hub/.

- lease.py: leadership (the configuration's advisory lock), heartbeats in
  sync.bridges, fencing a stale leader;
- report.py: what sync.status shows: queue depth samples, errors and
  recoveries, batch counts, canaries, and link control (pause / resume);
- dead_letters.py: a dead letter's life: written, closed when its key
  applies, retried on request (sync.retry_dead);
- resolutions.py: enacting a conflict an operator resolved (sync.resolve_conflict);
- prune.py: retention of applied batches and the hub's logs.

The bridge (bridge/daemon.py) schedules these; it holds no SQL of its own.
"""
