"""A bridge of many idle links: its stats round costs O(links), not O(links²).

Every stats_interval the round asks, for each direction, whether the bridge
vouches that nothing is queued there. That answer used to rebuild and sort the
list of every quiet direction per question: with 1,000 idle links 0.7 s of CPU
each second (the event loop blocked meanwhile), with 3,000 several seconds.
Found by `syncbridge bench --only links --idle-links`. No database is reached:
directions the bridge vouches for are not sampled.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from syncbridge.bridge.upkeep import Upkeep

LINKS = 3000


def test_the_stats_round_over_many_idle_links_is_linear():
    bridge = Upkeep.__new__(Upkeep)  # only the state the round reads
    bridge.drains = [SimpleNamespace(link=SimpleNamespace(name=f"link_{i}"), src="a")
                     for i in range(LINKS)]
    bridge.quiet = {(f"link_{i}", "a") for i in range(LINKS)}
    bridge.depths = dict.fromkeys(bridge.quiet, 0)
    started = time.process_time()
    assert asyncio.run(bridge._sample(hub=None)) == []  # all vouched: no statement
    assert time.process_time() - started < 1.0  # O(links²) took ~7 s here
    assert len(bridge._quiet_directions()) == LINKS
