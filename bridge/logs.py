"""One event per line on stderr, key=value (default) or JSON.

Messages are written as `event=name key=value ...`; DSNs and secrets are never
passed to the logger, so nothing here needs to scrub them.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
               "level": record.levelname.lower(), "logger": record.name}
        for part in record.getMessage().split(" "):
            k, sep, v = part.partition("=")
            if sep:
                out[k] = v
            else:
                out.setdefault("msg", "")
                out["msg"] = (out["msg"] + " " + part).strip()
        return json.dumps(out)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_Json())
    else:
        handler.setFormatter(logging.Formatter(
            "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
            "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncio", "yoyo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
