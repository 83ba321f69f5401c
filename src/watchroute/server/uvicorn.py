"""Every use of uvicorn's insides, in one module, checked against the releases it was tested with.

watchroute runs on uvicorn's public API (`Config`, `Server`) and, for speed and for the
connection caps, on a few of its private parts: the httptools protocol (subclassed for the caps
and the request head's deadline), its request-response cycle (`transport`, `flow`,
`response_*`, `chunked_encoding`) and the protocol's `pipeline` and `connections`. They are
used for three things only:

- taking a started watch stream's connection over (`take_over`, `transports/takeover.py`);
- writing a response's head together with its body (`hold_head`);
- capping open connections and timing the request head (`guarded_http_protocol`,
  `server/connections.py`).

Private parts change without notice, so at start (`internals_usable`) the installed uvicorn is
checked against the minor releases pyproject.toml pins (`SUPPORTED`) and for every attribute
used. When either check fails, one warning is logged and the server runs on plain ASGI: streams
stay ordinary responses, heads go out on their own, and open connections are capped by
uvicorn's own `limit_concurrency` (no per-address cap, no head deadline). Setting
WATCHROUTE_PLAIN_ASGI=1 forces that path, so that tests can show it serves correctly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from watchroute.server.connections import TIMED_OUT, ConnectionLimits, Slot

log = logging.getLogger("watchroute")

# The uvicorn releases whose internals this module was tested with: >= the first, < the second
# (the range pyproject.toml pins).
SUPPORTED = ((0, 55), (0, 56))
PLAIN_ASGI = "WATCHROUTE_PLAIN_ASGI"

# Attributes read or written below, by class: set in these methods (instance attributes) or
# defined on the class.
_USED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "RequestResponseCycle": (
        ("__init__",),
        (
            "transport",
            "flow",
            "scope",
            "response_started",
            "response_complete",
            "chunked_encoding",
            "disconnected",
            "waiting_for_100_continue",
        ),
    ),
    "HttpToolsProtocol": (
        ("__init__", "connection_made"),
        ("cycle", "pipeline", "connections", "flow", "client", "loop", "transport"),
    ),
}
_METHODS = {
    "HttpToolsProtocol": (
        "connection_made",
        "connection_lost",
        "on_message_begin",
        "on_headers_complete",
        "handle_websocket_upgrade",
    ),
    "FlowControl": ("resume_reading",),
    "Server": ("startup", "handle_exit", "serve"),
}


def _version(text: str) -> tuple[int, int] | None:
    parts = text.split(".")[:2]
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def _why_not() -> str | None:
    """Why uvicorn's internals cannot be used; None when they can."""
    if os.environ.get(PLAIN_ASGI, "").lower() in ("1", "true", "yes", "on"):
        return f"{PLAIN_ASGI} is set"
    version = uvicorn.__version__
    low, high = SUPPORTED
    found = _version(version)
    if found is None or not low <= found < high:
        tested = f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"
        return f"uvicorn {version} is not in the tested range {tested}"
    try:
        from uvicorn.protocols.http.flow_control import FlowControl
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    except ImportError as exc:
        return f"uvicorn {version}: {exc}"
    classes: dict[str, type] = {
        "RequestResponseCycle": RequestResponseCycle,
        "HttpToolsProtocol": HttpToolsProtocol,
        "FlowControl": FlowControl,
        "Server": uvicorn.Server,
    }
    for name, (methods, attributes) in _USED.items():
        cls = classes[name]
        assigned = {n for m in methods for n in _names_set_in(getattr(cls, m, None))}
        missing = [a for a in attributes if a not in assigned and not hasattr(cls, a)]
        if missing:
            return f"uvicorn {version}: {name} has no {', '.join(missing)}"
    for name, methods in _METHODS.items():
        missing = [m for m in methods if not callable(getattr(classes[name], m, None))]
        if missing:
            return f"uvicorn {version}: {name} has no {', '.join(missing)}"
    return None


def _names_set_in(method: Any) -> tuple[str, ...]:
    code = getattr(method, "__code__", None)
    return code.co_names if code is not None else ()


@functools.cache
def internals_usable() -> bool:
    """Whether uvicorn's internals may be used; the first call logs a warning when not (the
    server calls it at start, before any worker forks, so the warning is written once)."""
    why = _why_not()
    if why is not None:
        log.warning(
            "serving on plain ASGI (%s): watch streams stay with uvicorn, response heads are "
            "written apart from their bodies, and open connections are capped by uvicorn's "
            "limit_concurrency only",
            why,
        )
    return why is None


# -- the server -------------------------------------------------------------------------------


class Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once started (`listening`) and when a signal
    asks it to stop (`stop_asked`), before uvicorn waits for responses in flight."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        servers = getattr(self, "servers", None) or []
        bound = servers[0].sockets if servers and servers[0].sockets else None
        self.listening(tuple(bound[0].getsockname()[:2]) if bound else None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stop_asked()
        super().handle_exit(sig, frame)

    def listening(self, address: tuple[str, int] | None) -> None:
        """The server listens (on `address`, when it bound one itself)."""

    def stop_asked(self) -> None:
        """A signal asked the server to stop (called from the signal handler)."""


# -- the connection caps and the request head's deadline ----------------------------------------


def follow_protocol(protocol: Any, slot: Slot) -> None:
    """Have `protocol`, which now has the socket (a WebSocket's), give the place back."""
    lost = protocol.connection_lost

    def connection_lost(exc: Exception | None) -> None:
        slot.release()
        lost(exc)

    protocol.connection_lost = connection_lost


def guarded_http_protocol(limits: ConnectionLimits) -> type:
    """uvicorn's httptools protocol with the caps and the head's deadline, for `uvicorn.Config(http=...)`."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    timeout = limits.header_timeout

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        connection_slot: Slot | None = None
        _head_deadline: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            address = self.client[0] if self.client else None
            refused = limits.admit(address)
            if refused is not None:
                limits.hit(refused, address)
                transport.abort()  # the descriptor is free at once
                return
            self.connection_slot = Slot(limits, address)
            self._head_deadline = self.loop.call_later(timeout, self._head_too_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            if self.connection_slot is not None:
                self.connection_slot.release()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_deadline is None:  # the next request on a kept-alive connection
                self._head_deadline = self.loop.call_later(timeout, self._head_too_late)

        def on_headers_complete(self) -> None:
            self._cancel_deadline()
            super().on_headers_complete()

        def handle_websocket_upgrade(self) -> None:
            super().handle_websocket_upgrade()
            slot = self.hand_over()
            if slot is not None:
                follow_protocol(self.transport.get_protocol(), slot)

        def hand_over(self) -> Slot | None:
            """The connection's place, for the protocol taking the socket over (a WebSocket's,
            or a watch stream's); this one is done with it."""
            self._cancel_deadline()
            slot, self.connection_slot = self.connection_slot, None
            return slot

        def _cancel_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_too_late(self) -> None:
            self._head_deadline = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            limits.hit("header_timeout", self.client[0] if self.client else None)
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(TIMED_OUT)
            self.transport.close()

    return GuardedHttpToolsProtocol


# -- a request's cycle, behind the server's own `send` -------------------------------------------


def uvicorn_cycle(server_send: Any) -> Any:
    """uvicorn's request-response cycle behind its own `send` (the one that writes to the
    connection's `transport`); None under another server, or when its internals are not used."""
    cycle = getattr(server_send, "__self__", None)
    if type(cycle).__name__ != "RequestResponseCycle" or getattr(cycle, "transport", None) is None:
        return None
    return cycle if internals_usable() else None


def _claimable(server_send: Any) -> Any:
    """uvicorn's request-response cycle behind `server_send`, if its connection can be taken
    over once the response has started; else None."""
    cycle = uvicorn_cycle(server_send)
    if cycle is None:
        return None
    transport = cycle.transport
    protocol = transport.get_protocol()
    # Any, as `cycle` is: compared by identity below, an Optional would narrow `cycle` to one.
    protocol_cycle: Any = getattr(protocol, "cycle", None)
    if (
        protocol_cycle is not cycle
        or getattr(protocol, "pipeline", True)
        or cycle.response_complete
        or cycle.disconnected
        or cycle.flow.write_paused
        or cycle.scope["method"] != "GET"
        or transport.is_closing()
    ):
        return None
    return cycle


def can_take_over(server_send: Any) -> bool:
    """Whether `take_over` will work once the response has started."""
    cycle = _claimable(server_send)
    return cycle is not None and not cycle.response_started


# What takes the socket: (transport, the server's set of open connections, the connection's
# place under the caps) -> the new protocol.
TakeOver = Callable[[asyncio.Transport, "set[Any]", "Slot | None"], asyncio.Protocol]


def take_over(server_send: Any, protocol_for: TakeOver) -> asyncio.Protocol | None:
    """Give the connection of a started chunked response to the protocol `protocol_for` makes.

    Returns None (and changes nothing) under another server, or when the connection is in a
    state where the server must keep it (a pipelined request waiting, a paused write, a HEAD
    request). The new protocol stands in the server's set of connections, so that a graceful
    shutdown calls its `shutdown()` and waits for it like any other response in flight; it
    removes itself from the set when its connection is lost.
    """
    cycle = _claimable(server_send)
    if cycle is None or not cycle.response_started or not cycle.chunked_encoding:
        return None
    transport = cycle.transport
    protocol = transport.get_protocol()
    hand_over = getattr(protocol, "hand_over", None)  # guarded_http_protocol's
    connection = protocol_for(transport, protocol.connections, hand_over() if hand_over else None)
    # The server now sees a finished response: when the ASGI call returns it neither closes
    # the transport nor waits for more, and its request state becomes garbage.
    cycle.response_complete = True
    protocol.flow.resume_reading()  # the new protocol must see the client leave
    protocol.connections.discard(protocol)
    protocol.connections.add(connection)
    transport.set_protocol(connection)
    return connection


# -- a response's head written with its body ---------------------------------------------------


class HeldHead:
    """The transport of one request's cycle, holding back its first write.

    uvicorn writes a response's status line and headers when the app sends
    `http.response.start`, and the body when it sends `http.response.body`: two writes, and
    under uvloop two system calls and two TCP segments, each one waking the client (single
    writes measured faster with one). So while a request runs, its cycle writes to this
    stand-in for the connection's transport. The head of a response of known length is kept
    and sent with the body, then the cycle gets its transport back; a head still held when the
    app returns goes out then. Any other head goes out at once: a chunked response (a watch
    stream) may wait hours for its first chunk.
    """

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


def hold_head(server_send: Any) -> HeldHead | None:
    """Hold the head of the response to the request behind uvicorn's `send`; None (and nothing
    held) under another server, on plain ASGI, for a HEAD request (no body to wait for; a
    request pipelined behind could be answered first), or for a request that expects
    `100 Continue` (written before the head)."""
    cycle = uvicorn_cycle(server_send)
    if (
        cycle is None
        or getattr(cycle, "waiting_for_100_continue", True)
        or not hasattr(cycle, "chunked_encoding")
        or cycle.scope.get("method") == "HEAD"
    ):
        return None
    return HeldHead(cycle)
