"""gzip for the answers that are worth it: a whole JSON body of at least `compress_min_bytes`,
to a client that accepts gzip.

Only the routes that can answer with a large body call this (a list page, a read, a long-poll
answer, the API docs' files), after they have made it: no middleware layer is added to every
request, and writes and watch streams never pass through here. A watch stream is not
compressed at all: gzip would hold events back until a block fills, or cost a flush per event.
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.requests import Request
from starlette.responses import Response

# Above this a body is compressed off the event loop (zlib lets go of the GIL while it works),
# so that a page of 10,000 resources does not hold up every watcher for milliseconds.
IN_THREAD_BYTES = 64 * 1024
# The loop is the watchers' too: level 1 compresses a list page nearly as well as zlib's default
# (6) in a fraction of the time (docs/benchmarks.md, *Measurements behind the code*).
LEVEL = 1


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether `Accept-Encoding` admits gzip: named without `q=0` (RFC 9110 12.5.3)."""
    if not accept_encoding:
        return False
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() != "gzip":
            continue
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def gzip_bytes(body: bytes, level: int = LEVEL) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: the gzip container
    return packer.compress(body) + packer.flush()


async def compressed(request: Request, response: Response, min_bytes: int) -> Response:
    """`response` gzip-encoded when its body is large enough and the client accepts it; one that
    streams (a long-poll's initial state, sent a page at a time) goes as it is, never buffered."""
    body = getattr(response, "body", None)
    if body is None or not min_bytes or len(body) < min_bytes or "content-encoding" in response.headers:
        return response
    response.headers["vary"] = "Accept-Encoding"
    if not accepts_gzip(request.headers.get("accept-encoding")):
        return response
    packed = gzip_bytes(body) if len(body) < IN_THREAD_BYTES else await asyncio.to_thread(gzip_bytes, body)
    response.body = packed
    response.headers["content-encoding"] = "gzip"
    response.headers["content-length"] = str(len(packed))
    return response
