"""One event per line on stderr, key=value (default) or JSON.

Messages are written as `event=name key=value ...`; DSNs and secrets are never
passed to the logger, and neither are row values: errors are logged with
`errors.describe_safe` (no DETAIL, no quoted values), which is what
docs/webhooks.md and the README promise. Three rules are kept here for every
logger, ours and our libraries':

- one event is one line: newlines in a message are folded into spaces;
- a traceback is written only at DEBUG; at other levels an exception is one
  `error=Type: message` field (an outage is an event, not a stack dump);
- with `[bridge] log_keys = false` the value of every `key=%s` field is
  replaced by a short hash, so logs carry no key values either (the same key
  always gives the same hash, so lines about one row can still be found).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from typing import Any

_KEY_FIELD = re.compile(r"(?<![A-Za-z_])key=%s")
_hash_keys = False


def set_key_logging(log_keys: bool) -> None:
    """`[bridge] log_keys`: True logs keys as they are, False logs a hash of each."""
    global _hash_keys
    _hash_keys = not log_keys


def key_hash(value: object) -> str:
    return "h:" + hashlib.sha256(str(value).encode()).hexdigest()[:12]


class _HashKeys(logging.Filter):
    """Replace the argument of each `key=%s` with its hash (when log_keys is off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _hash_keys or not isinstance(record.msg, str) or not record.args:
            return True
        if not isinstance(record.args, tuple) or "key=%s" not in record.msg:
            return True
        args = list(record.args)
        for m in _KEY_FIELD.finditer(record.msg):
            index = len(re.findall(r"%[^%]", record.msg[: m.start() + 4]))
            if index < len(args):
                args[index] = key_hash(args[index])
        record.args = tuple(args)
        return True


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def _error(record: logging.LogRecord) -> str | None:
    """The exception of a record as one `Type: message` text (None without one)."""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        return f"{type(exc).__name__}: {_one_line(str(exc))}"
    return None


def _message(record: logging.LogRecord) -> str:
    msg = _one_line(record.getMessage())
    error = _error(record)
    return msg + f" error={error}" if error else msg


class _Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
                         "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            return super().format(record)  # with the traceback, if any
        record.message = _message(record)
        record.asctime = self.formatTime(record, self.datefmt)
        return self.formatMessage(record)


_FIELD = re.compile(r"(?:^| )([A-Za-z_][A-Za-z0-9_]*)=(.*?)(?= [A-Za-z_][A-Za-z0-9_]*=|$)")


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
               "level": record.levelname.lower(), "logger": record.name}
        msg = _one_line(record.getMessage())
        first = _FIELD.search(msg)
        if first is None or first.start() > 0:
            out["msg"] = msg[: first.start() if first else len(msg)].strip()
        # a value runs to the next ` name=`, so a key like {"id": 3} stays whole
        for m in _FIELD.finditer(msg):
            out[m.group(1)] = m.group(2)
        error = _error(record)
        if error:
            out["error"] = error
        if record.exc_info and logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out)


class _Stderr(logging.StreamHandler):
    """Writes to sys.stderr as it is when a line is logged, not when setup ran: a
    handler bound to an earlier stream (pytest's capture, a closed pipe) fails."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = _Stderr()
    handler.setFormatter(_Json() if fmt == "json" else _Text())
    handler.addFilter(_HashKeys())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncio", "yoyo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
