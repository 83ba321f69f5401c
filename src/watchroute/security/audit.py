"""The audit log: one JSON line per authentication failure, denial and limit hit.

Each line says who (subject, or "-" before authentication; the client address), what (the
method and path, never the query string, which may hold `access_token`), and why (a stable
event name and a short reason). No line ever holds a credential: the reasons are written by
this code, not copied from the request.

The lines go to the `watchroute.audit` logger at WARNING; by default a handler of its own
writes them to standard error, one JSON object per line, ready for a log shipper.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import Any

import orjson

log = logging.getLogger("watchroute.audit")

# Lines written so far, by event, for /metrics: the whole process, whatever app wrote them.
counts: Counter[str] = Counter()

AUTH_FAILED = "auth_failed"
DENIED = "denied"
RATE_LIMITED = "rate_limited"
CONNECTION_LIMITED = "connection_limited"  # the server's caps on open connections


class JSONLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(record.msg).decode() if isinstance(record.msg, dict) else super().format(record)


def install() -> None:
    """Give the audit logger its own JSON-lines handler (once), unless the host app configured one."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONLines())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def record(
    event: str,
    why: str,
    *,
    subject: str | None = None,
    address: str | None = None,
    method: str | None = None,
    path: str | None = None,
    **more: Any,
) -> None:
    line: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "audit": event,
        "subject": subject or "-",
        "address": address or "-",
        "why": why,
    }
    if method is not None:
        line["method"] = method
        line["path"] = path
    line.update(more)
    counts[event] += 1
    log.warning(line)
