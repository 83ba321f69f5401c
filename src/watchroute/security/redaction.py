"""Keeping bearer tokens out of the log lines the server writes.

The middleware takes `access_token` out of the query string before any route sees it, but
uvicorn logs from the scope it made itself: every WebSocket handshake (accepted or refused)
as `"WebSocket /v1/_watch?access_token=..." [accepted]`, and each HTTP request the same way
when its access log is on. Those lines are formatted from the record's arguments, so a filter
on uvicorn's loggers rewrites the message and every argument before any handler formats them:
the value of `access_token` becomes `[redacted]`, the rest of the line stays as it was.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

# The loggers uvicorn writes request lines to (its error log carries the WebSocket handshakes).
LOGGERS = ("uvicorn.error", "uvicorn.access")
REDACTED = "[redacted]"

_PARAMETER = "access_token="
# Up to the next parameter, fragment, quote or space: the value as it stands in a URL.
_VALUE = re.compile(r"(access_token=)[^&#\s\"']*")


def redact(text: str) -> str:
    """`text` with the value of every `access_token=` replaced."""
    if _PARAMETER not in text:
        return text
    return _VALUE.sub(r"\g<1>" + REDACTED, text)


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    """Rewrites a record's message and arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _clean(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_clean(arg) for arg in args)
        elif isinstance(args, Mapping):
            record.args = {key: _clean(arg) for key, arg in args.items()}
        return True


def install() -> None:
    """Put the filter on uvicorn's loggers (once). A logger's filters hold whatever handlers a
    logging configuration gives it later, and uvicorn's own configuration keeps them."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
