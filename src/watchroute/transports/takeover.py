"""Taking a streaming watch's connection over from the HTTP server once its headers are out.

A watch stream outlives its request by hours. Left with the server, every stream keeps the
server's per-request state alive (the parser, the request-response cycle and its scope, the
coroutine frames of the ASGI call) and every event goes through an ASGI `send` coroutine and
the server's chunked framing. Once the response has started, nothing of that is needed any more:
the stream is a chunked body written to a socket. So the stream takes the socket over: the
transport gets a small protocol of ours, the ASGI call returns, and the server forgets the
request. Events are then written to the transport directly, one chunk per write.

This reaches into uvicorn's httptools protocol, which is what `watchroute serve` runs. Under any
other server (or another uvicorn protocol) `take_over` returns None and the stream simply stays
an ordinary ASGI response.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

END_OF_BODY = b"0\r\n\r\n"


_last_chunk: tuple[bytes, bytes] = (b"", b"")


def chunk(body: bytes) -> bytes:
    """One HTTP/1.1 chunk of a chunked body. The same body goes to every unfiltered watcher of a
    collection in turn (`delivery.encode`), so the last one is remembered."""
    global _last_chunk
    if _last_chunk[0] is body:
        return _last_chunk[1]
    framed = b"%x\r\n%s\r\n" % (len(body), body)
    _last_chunk = (body, framed)
    return framed


class StreamConnection(asyncio.Protocol):
    """The protocol of a connection whose response is a watch stream we write ourselves.

    It stands in the server's set of connections, so that a graceful shutdown asks it to end
    (`shutdown`) and waits for it like for any other response in flight.
    """

    __slots__ = (
        "_drained",
        "_on_close",
        "closed",
        "connections",
        "paused",
        "slot",
        "timed_out",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, connections: set[Any], slot: Any = None) -> None:
        self.transport = transport
        self.connections = connections
        self.slot = slot  # the connection's place under the connection caps (connections.py)
        self.paused = False
        self.closed = False
        # The kernel gave up on the client (give_up_after): it read nothing for that long.
        self.timed_out = False
        self._drained: asyncio.Future[None] | None = None
        self._on_close: Callable[[], None] | None = None

    def give_up_after(self, seconds: float) -> None:
        """Have the kernel end the connection once what it sent has gone unacknowledged, or the
        client's window has stayed shut, for `seconds` (TCP_USER_TIMEOUT; Linux only).

        Without it a path that died silently (a NAT that forgot the connection, a laptop that
        slept, a client that froze) keeps the watch open while the kernel retransmits, about
        15 minutes, holding its place under the watch caps; with it the watch ends and its
        client, which stopped hearing heartbeats at the same time, resumes on a new connection.
        """
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        sock = self.transport.get_extra_info("socket")
        if option is None or sock is None:
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback` once when the client goes away (or at once if it already has)."""
        if self.closed:
            callback()
        else:
            self._on_close = callback

    # -- writing ---------------------------------------------------------------------------

    def send(self, frames: list[bytes]) -> Awaitable[None] | None:
        """Write frames as one chunk, at once. When the client's socket will not take more,
        returns what to wait on before the next write."""
        if self.closed:
            raise ConnectionResetError("the client has gone")
        body = frames[0] if len(frames) == 1 else b"".join(frames)
        self.transport.write(chunk(body))
        if not self.paused:
            return None
        self._drained = asyncio.get_running_loop().create_future()
        return self._drained

    async def write(self, frames: list[bytes]) -> None:
        drained = self.send(frames)
        if drained is not None:
            await drained

    def end(self) -> None:
        """End the body and the connection: a reconnecting client opens a new one anyway."""
        if not self.closed:
            self.transport.write(END_OF_BODY)
        self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # A streaming response is the last one on its connection; pipelined requests after it
        # are not answered.
        pass

    def eof_received(self) -> bool:
        self._lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.timed_out = isinstance(exc, TimeoutError)
        self._lost()
        self.connections.discard(self)
        if self.slot is not None:
            self.slot.release()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._release()

    # -- the server's connection interface ------------------------------------------------------

    def shutdown(self) -> None:
        if self._on_close is not None:
            self._on_close()

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._release()
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback()

    def _release(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


def uvicorn_cycle(server_send: Any) -> Any:
    """uvicorn's request-response cycle behind its own `send` (the one that writes to the
    connection's `transport`); None under another server."""
    cycle = getattr(server_send, "__self__", None)
    if type(cycle).__name__ != "RequestResponseCycle" or getattr(cycle, "transport", None) is None:
        return None
    return cycle


def _claimable(server_send: Any) -> Any:
    """uvicorn's request-response cycle behind `server_send`, if its connection can be taken
    over once the response has started; else None."""
    cycle = uvicorn_cycle(server_send)
    if cycle is None:
        return None
    transport = cycle.transport
    protocol = transport.get_protocol()
    if (
        getattr(protocol, "pipeline", True)
        or cycle.response_complete
        or cycle.disconnected
        or cycle.flow.write_paused
        or cycle.scope["method"] != "GET"
        or transport.is_closing()
        # Last: an identity test against a maybe-None value narrows `cycle` for the type checker.
        or getattr(protocol, "cycle", None) is not cycle
    ):
        return None
    return cycle


def can_take_over(server_send: Any) -> bool:
    """Whether `take_over` will work once the response has started. The response then says
    `Connection: close`: the connection ends with the stream, and a client that pools
    connections must not send its next request on it."""
    cycle = _claimable(server_send)
    return cycle is not None and not cycle.response_started


def take_over(server_send: Any) -> StreamConnection | None:
    """Take the connection of a started chunked response from uvicorn's httptools protocol.

    `server_send` is the server's own `send` for this request. Returns None (and changes
    nothing) when the server is another one, or when the connection is in a state where the
    server must keep it (a pipelined request waiting, a paused write, a HEAD request).
    """
    cycle = _claimable(server_send)
    if cycle is None or not cycle.response_started or not cycle.chunked_encoding:
        return None
    transport = cycle.transport
    protocol = transport.get_protocol()
    hand_over = getattr(protocol, "hand_over", None)  # connections.py's protocol
    connection = StreamConnection(transport, protocol.connections, hand_over() if hand_over else None)
    # The server now sees a finished response: when the ASGI call returns it neither closes
    # the transport nor waits for more, and its request state becomes garbage.
    cycle.response_complete = True
    protocol.flow.resume_reading()  # we must see the client leave
    protocol.connections.discard(protocol)
    protocol.connections.add(connection)
    transport.set_protocol(connection)
    return connection
