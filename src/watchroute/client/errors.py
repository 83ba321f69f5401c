"""Errors the client raises: the server's problem details, typed by status."""

from __future__ import annotations

from typing import Any

import orjson


class WatchrouteError(Exception):
    """Anything the client raises on purpose."""


class ConnectionFailed(WatchrouteError):
    """The server could not be reached, or the connection broke during a request."""


class APIError(WatchrouteError):
    """The server refused a request; `problem` is its RFC 9457 problem details."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.reason: str = str(problem.get("reason") or "HTTPError")
        self.detail: str = str(problem.get("detail") or problem.get("title") or "")
        super().__init__(f"{status} {self.reason}: {self.detail}")


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


def error_from_problem(status: int | None, problem: Any) -> APIError:
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)[:500] if problem else ""}
    status = int(status or problem.get("status") or 500)
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return kind(status, problem)


def error_from_body(status: int, body: bytes) -> APIError:
    """The error for a refused request, from the body of the refusal: problem details, or the
    text of whatever answered instead of watchroute (a proxy's error page, say)."""
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        problem = body.decode(errors="replace")
    return error_from_problem(status, problem)
