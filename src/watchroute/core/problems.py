"""RFC 9457 problem details: the one error shape of every route and every stream.

`reason` is the stable machine code a client branches on; `title` and `detail` are for people.
A `Problem` is a plain exception: the data path raises it without knowing of HTTP, and the web
layers render it (`watchroute.wire.problems` as ASGI messages, `watchroute.api.problems` as a
Starlette response), the same bytes either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://watchroute.dev/problems/"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    428: "Precondition Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """An error that reaches the client as problem details, with nothing written."""

    # The write a store refused (store/ops.py): a batch names the op's index from it.
    op: object = None

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body = {
            "type": PROBLEM_TYPE_BASE + self.reason,
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "reason": self.reason,
        }
        body.update(self.extra)
        return body


def bad_request(reason: str, detail: str, **extra: Any) -> Problem:
    return Problem(400, reason, detail, **extra)


def not_found(collection: str, id: str) -> Problem:
    return Problem(404, "NotFound", f"{collection}/{id} does not exist")


def precondition_failed(detail: str) -> Problem:
    return Problem(412, "PreconditionFailed", detail)


def document_too_large(max_bytes: int, size: int | None = None) -> Problem:
    would = (
        "the write would make the document larger"
        if size is None
        else f"the document would be {size} bytes, more"
    )
    return Problem(
        413,
        "DocumentTooLarge",
        f"{would} than the {max_bytes} bytes a document may hold (max_document_bytes)",
    )


def expired(since: int, compacted: int) -> Problem:
    return Problem(
        410,
        "Expired",
        f"revision {since} is older than the history horizon (changes up to revision "
        f"{compacted} are compacted); list again and watch from the list's revision",
    )


def future_revision(since: int, latest: int) -> Problem:
    return Problem(
        400,
        "FutureRevision",
        f"revision {since} is newer than the store's latest revision {latest}",
    )


def catching_up(since: int, seen: int) -> Problem:
    """503: the store has committed `since`, but this instance has not read that far yet."""
    return Problem(
        503,
        "CatchingUp",
        f"revision {since} is committed but this instance has read the log only to {seen}; "
        "try again in a moment (or on another instance)",
        headers={"Retry-After": "1"},
    )


def invalid_parameters(errors: Sequence[Any]) -> Problem:
    """400 for request parameters that fail their declared constraints (pydantic's errors)."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "query")
        parts.append(f"{where}: {error.get('msg')}")
    return Problem(400, "BadParameter", "; ".join(parts) or "bad request")


def store_unavailable(detail: str, retry_after: int = 1) -> Problem:
    """503 for a request the database could not serve now; the client tries again later."""
    return Problem(503, "StoreUnavailable", detail, headers={"Retry-After": str(retry_after)})
