"""Reading request bodies: size-limited, JSON, and the right shape."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request

from watchroute.core.problems import Problem, bad_request


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
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request("InvalidJSON", f"the request body is not valid JSON: {exc}") from None
    check_integers(body)
    return document


async def read_object(request: Request, max_bytes: int) -> dict[str, Any]:
    document = await read_json(request, max_bytes)
    if not isinstance(document, dict):
        raise bad_request("NotAnObject", f"the request body must be a JSON object, not {json_kind(document)}")
    return document


def too_large(max_bytes: int) -> Problem:
    return Problem(413, "TooLarge", f"the request body is larger than {max_bytes} bytes")


_KINDS: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return _KINDS.get(type(value), "a number")


# orjson reads an integer beyond 64 bits as a float, which would store another number than the
# one sent (docs/watch.md, Writes): such a body is refused. An integer beyond the range has at
# least 19 digits, so a body without 19 digits in a row (nearly all of them; the test costs a
# tenth of orjson's parse) needs no closer look.
INTEGER_MIN = -(2**63)
INTEGER_MAX = 2**64 - 1
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_RUN = b"0" * 19


class _Inexact(Exception):
    pass


def _exact_integer(literal: str) -> None:
    # JSON has no leading zeros: more than 20 digits is beyond the range, and int() is not asked
    # to read thousands of them (it refuses more than 4300).
    if len(literal.lstrip("-")) > 20 or not INTEGER_MIN <= int(literal) <= INTEGER_MAX:
        raise _Inexact(literal)


def check_integers(body: bytes) -> None:
    """422 `NumberOutOfRange` for a body (valid JSON) holding an integer that orjson cannot keep."""
    if _LONG_RUN not in body.translate(_DIGITS_AS_ZERO):
        return
    try:
        json.loads(body, parse_int=_exact_integer)  # only to see each integer literal as sent
    except _Inexact as exc:
        literal = exc.args[0]
        shown = literal if len(literal) <= 40 else f"{literal[:20]}...({len(literal)} digits)"
        raise Problem(
            422,
            "NumberOutOfRange",
            f"the integer {shown} cannot be kept exactly: integers are kept from -2**63 to "
            "2**64-1; send a larger one as a string",
        ) from None
    except RecursionError:
        raise Problem(422, "TooDeep", "the request body is nested too deeply") from None
