"""Reading request bodies: size-limited, JSON, and the right shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from ..problems import Problem, bad_request


async def read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise bad_request("InvalidJSON", "the request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request("InvalidJSON", f"the request body is not valid JSON: {exc}") from None


async def read_object(request: Request, max_bytes: int) -> dict[str, Any]:
    document = await read_json(request, max_bytes)
    if not isinstance(document, dict):
        raise bad_request("NotAnObject", f"the request body must be a JSON object, not {json_kind(document)}")
    return document


def too_large(max_bytes: int) -> Problem:
    return Problem(413, "TooLarge", f"the request body is larger than {max_bytes} bytes")


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")
