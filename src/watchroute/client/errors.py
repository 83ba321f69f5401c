"""Errors the client raises: the server's problem details, typed by status."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import orjson

# Statuses that say "later", not "no": a watch reconnects after them, and a watch's or a
# LiveCollection's listing is tried again, after at least the server's Retry-After.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); 0 when absent."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


class WatchrouteError(Exception):
    """Anything the client raises on purpose."""


class ConnectionFailed(WatchrouteError):
    """The server could not be reached, or the connection broke during a request."""


class ProtocolError(WatchrouteError):
    """The server sent something that is not the watch protocol (an event without a revision,
    say): the watch stops rather than guess, since a change it skipped would be lost."""


class APIError(WatchrouteError):
    """The server refused a request; `problem` is its RFC 9457 problem details. `retry_after`
    is the refusal's Retry-After in seconds (0 when absent); `retriable` says whether the status
    means "later" (408, 425, 429, 500, 502, 503, 504)."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float = 0.0) -> None:
        self.status = status
        self.problem = problem
        self.retry_after = retry_after
        self.reason: str = str(problem.get("reason") or "HTTPError")
        self.detail: str = str(problem.get("detail") or problem.get("title") or "")
        super().__init__(f"{status} {self.reason}: {self.detail}")

    @property
    def retriable(self) -> bool:
        return self.status in RETRY_STATUSES


class BadRequest(APIError):
    """400/422: a bad name, parameter, filter (reason BadFilter) or body."""


class NotFound(APIError):
    """404: the resource does not exist."""


class Conflict(APIError):
    """409: the write conflicts with the current state."""


class Expired(APIError):
    """410: the watch's resume point is older than the server's history horizon.

    List again and watch from the list's revision (`watch(..., on_expired="relist")` and
    `LiveCollection` do it for you)."""


class PreconditionFailed(APIError):
    """412: If-Match / If-None-Match (or a batch op's `if_match`) did not hold."""


class TooLarge(APIError):
    """413: the body is over the server's limit."""


class ServerError(APIError):
    """5xx: the server failed; worth retrying later."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    404: NotFound,
    409: Conflict,
    410: Expired,
    412: PreconditionFailed,
    413: TooLarge,
    422: BadRequest,
}


def error_from_problem(status: int | None, problem: Any, retry_after: float = 0.0) -> APIError:
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)[:500] if problem else ""}
    status = int(status or problem.get("status") or 500)
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return kind(status, problem, retry_after)


def error_from_body(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> APIError:
    """The error for a refused request, from the body of the refusal: problem details, or the
    text of whatever answered instead of watchroute (a proxy's error page, say)."""
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        problem = body.decode(errors="replace")
    after = retry_after(headers.get("retry-after")) if headers is not None else 0.0
    return error_from_problem(status, problem, after)
