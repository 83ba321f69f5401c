"""Problem details (RFC 9457) as bytes and as the ASGI messages of an HTTP answer.

Raw ASGI so that the security middleware and the transports answer a refusal without a web
framework; `watchroute.api.problems` wraps the same head and body in a Starlette response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from watchroute.core.problems import PROBLEM_MEDIA_TYPE, Problem

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def problem_body(problem: Problem) -> bytes:
    return orjson.dumps(problem.to_dict())


def problem_headers(problem: Problem, body: bytes) -> list[tuple[bytes, bytes]]:
    """The problem's own headers, then Content-Length and Content-Type, in Starlette's order."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items()]
    names = {name for name, _ in headers}
    if b"content-length" not in names:
        headers.append((b"content-length", str(len(body)).encode()))
    if b"content-type" not in names:
        headers.append((b"content-type", PROBLEM_MEDIA_TYPE.encode()))
    return headers


async def send_problem(problem: Problem, send: Send, *, prefix: str = "http") -> None:
    """Answer with `problem`; `prefix="websocket.http"` refuses a WebSocket handshake with it
    (the ASGI denial-response extension)."""
    body = problem_body(problem)
    await send(
        {
            "type": f"{prefix}.response.start",
            "status": problem.status,
            "headers": problem_headers(problem, body),
        }
    )
    await send({"type": f"{prefix}.response.body", "body": body})
