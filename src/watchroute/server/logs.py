"""What the server's log looks like: text for a terminal or JSON lines for a log shipper
(`log_format`), the optional access log (`access_log`), and the line that says where it serves.

The configuration is handed to uvicorn, which applies it in every worker process. The audit
log (`security/audit.py`) keeps a handler of its own and is JSON lines in either format.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

from watchroute import __version__
from watchroute.security import audit
from watchroute.security.redaction import REDACTED, RedactTokens
from watchroute.settings import Settings

log = logging.getLogger("watchroute")

# A database URL may carry a password (user:secret@host).
_PASSWORD = re.compile(r"(//[^:/@]*:)[^@/]*@")


class JSONLines(logging.Formatter):
    """One JSON object per line: time, level, logger and message; an access-log line has its
    fields apart (client, method, path, status), so that nothing has to parse the message."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, http, status = args
            line.update(client=client, method=method, path=path, http=http, status=status)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's `log_config`: its own loggers and watchroute's, in the format asked for."""
    level = settings.log_level.upper()
    if settings.log_format == "json":
        formatters: dict[str, Any] = {
            "default": {"()": JSONLines},
            "access": {"()": JSONLines},
        }
    else:
        formatters = {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            },
        }
    stderr = "ext://sys.stderr"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # The audit log's lines are JSON objects in either format (security/audit.py); named
        # here, since a configuration resets the loggers below those it names.
        "formatters": {**formatters, "audit": {"()": audit.JSONLines}},
        "filters": {"redact_tokens": {"()": RedactTokens}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": stderr},
            "audit": {"class": "logging.StreamHandler", "formatter": "audit", "stream": stderr},
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "filters": ["redact_tokens"],
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "watchroute": {"handlers": ["default"], "level": level, "propagate": False},
            "watchroute.audit": {"handlers": ["audit"], "level": "INFO", "propagate": False},
        },
    }


def announce(settings: Settings, host: str, port: int) -> None:
    """The line that tells a newcomer what runs and where to go next."""
    scheme = "https" if settings.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    base = f"{scheme}://{shown}:{port}"
    log.info(
        "watchroute %s serving %s on %s (dashboard %s/ui, API docs %s/docs)",
        __version__,
        _PASSWORD.sub(r"\1" + REDACTED + "@", settings.database),
        base,
        base,
        base,
    )
