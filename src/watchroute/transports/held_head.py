"""A response's head leaves the server in the same socket write as the start of its body.

uvicorn writes a response's status line and headers when the app sends `http.response.start`,
and the body when it sends `http.response.body`: two writes, and under uvloop two system calls
and two TCP segments, each one waking the client. For a small response the second round is a
large part of the request: with one write, single `PUT`s were faster (docs/benchmarks.md,
*Measurements behind the code*).

So while a request runs, its request-response cycle writes to a `HeldHead` that stands in for
the connection's transport. The head of a response of known length is kept and sent with the
body, then the cycle gets its transport back; a head still held when the app returns goes out
then. Any other head goes out at once: a chunked response (a watch stream) may wait hours for
its first chunk. Nothing is held under any other server, for a HEAD request (no body to wait
for), or for a request that expects `100 Continue` (written before the head).
"""

from __future__ import annotations

from typing import Any

from starlette.types import Send

from watchroute.transports.takeover import uvicorn_cycle


class HeldHead:
    """The transport of one request's cycle, holding back its first write."""

    __slots__ = ("cycle", "head", "holding", "status", "transport")

    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle
        self.transport = cycle.transport
        self.head: bytes | None = None
        self.holding = True
        self.status = 0  # the response's, once its head has been written
        cycle.transport = self

    def write(self, data: bytes) -> None:
        if not self.holding:  # whoever kept hold of this stand-in writes straight through
            self.transport.write(data)
        elif self.head is not None:
            self.release(data)
        else:
            # The head. Its status line (`HTTP/1.1 201 Created`) is read here for /metrics
            # (http_counts.py): no layer has to wrap `send` to see it.
            code = data[9:12]
            self.status = int(code) if code.isdigit() else 0
            # uvicorn has read the head's framing before writing it: False is a known length.
            if self.cycle.chunked_encoding is False:
                self.head = data
            else:
                self.release()
                self.transport.write(data)

    def close(self) -> None:
        # The head goes first (an app that fails after starting its response).
        self.release()
        self.transport.close()

    def release(self, body: bytes = b"") -> None:
        """Give the cycle its transport back, writing the held head (with `body`, if given)."""
        self.cycle.transport = transport = self.transport
        head, self.head, self.holding = self.head, None, False
        # A connection already closing has lost its client (uvicorn marks only the newest of
        # pipelined requests disconnected): nothing more goes out, and no error.
        if head is not None and not transport.is_closing():
            transport.write(head + body)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def hold_head(server_send: Send) -> HeldHead | None:
    """Hold the head of the response to the request behind uvicorn's `send`; None (and nothing
    held) under another server."""
    cycle = uvicorn_cycle(server_send)
    if (
        cycle is None
        or getattr(cycle, "waiting_for_100_continue", True)
        or not hasattr(cycle, "chunked_encoding")  # uvicorn's httptools protocol
        # A HEAD response is its head alone: nothing would send it before the app returns, and
        # a request pipelined behind could be answered first.
        or cycle.scope.get("method") == "HEAD"
    ):
        return None
    return HeldHead(cycle)
