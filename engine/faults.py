"""Crash points for tests: SIGKILL this process at a named step of the pipeline.

SYNCBRIDGE_FAULT="after_sink_commit:3" kills the bridge right after the third
sink commit, before the source cleanup: the exact window where a sync engine
loses or doubles data. Unset (always, in production) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_spec = os.environ.get("SYNCBRIDGE_FAULT", "")
_point, _, _count = _spec.partition(":")
_seen: dict[str, int] = {}


def hit(point: str) -> None:
    if point != _point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] >= int(_count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
