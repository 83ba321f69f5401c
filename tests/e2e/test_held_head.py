"""A response's head leaves in the same write as its body; a watch stream's head leaves at once."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.responses import StreamingResponse
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from watchroute import Settings, create_app
from watchroute.server.uvicorn import HeldHead, hold_head


class RecordingTransport(asyncio.Transport):
    """A connection as uvicorn's protocol sees it, recording every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol


def connect(app: Callable[..., Any]) -> tuple[HttpToolsProtocol, RecordingTransport, ServerState]:
    """A new connection to uvicorn's httptools protocol running `app`."""
    config = Config(app=app, http="httptools", access_log=False, log_level="warning", proxy_headers=False)
    config.load()
    state = ServerState()
    transport = RecordingTransport()
    protocol = HttpToolsProtocol(config=config, server_state=state, app_state={})
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return protocol, transport, state


async def answered(state: ServerState, responses: int = 1) -> None:
    deadline = time.monotonic() + 10
    while state.total_requests < responses:
        assert time.monotonic() < deadline, "no response"
        await asyncio.sleep(0.005)


async def exchange(app: Callable[..., Any], request: bytes, responses: int = 1) -> list[bytes]:
    """Send `request` on a new connection; the writes until `responses` responses are complete."""
    protocol, transport, state = connect(app)
    protocol.data_received(request)
    await answered(state, responses)
    protocol.connection_lost(None)
    return transport.writes


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(database=f"sqlite:///{tmp_path / 'w.db'}"))


def put(path: str, body: bytes, *extra: bytes) -> bytes:
    head = (
        b"PUT %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        % (
            path.encode(),
            len(body),
        )
    )
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


def test_a_response_leaves_in_one_write(app):
    async def run() -> None:
        async with app.router.lifespan_context(app):
            body = b'{"price": 101.5}'
            (created,) = await exchange(app, put("/v1/quotes/q1", body))
            assert created.startswith(b"HTTP/1.1 201 Created\r\n")
            assert created.endswith(b'"data":{"price":101.5}}')
            (read,) = await exchange(app, b"GET /v1/quotes/q1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read.startswith(b"HTTP/1.1 200 OK\r\n") and read.endswith(b'"data":{"price":101.5}}')
            (missing,) = await exchange(app, b"GET /v1/quotes/nope HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert missing.startswith(b"HTTP/1.1 404 ") and missing.endswith(b"}")
            # Two requests on one connection: one write each, in order.
            twice = await exchange(app, put("/v1/quotes/q2", body) + put("/v1/quotes/q3", body), responses=2)
            assert [w.split(b"\r\n")[0] for w in twice] == [b"HTTP/1.1 201 Created"] * 2
            assert b'"id":"q2"' in twice[0] and b'"id":"q3"' in twice[1]

    asyncio.run(run())


def test_a_client_expecting_100_continue_hears_it_before_the_response(app):
    async def run() -> None:
        async with app.router.lifespan_context(app):
            writes = await exchange(app, put("/v1/quotes/q1", b'{"price": 1}', b"Expect: 100-continue"))
            assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
            assert b"".join(writes[1:]).startswith(b"HTTP/1.1 201 Created\r\n")

    asyncio.run(run())


def test_a_streamed_response_sends_its_head_before_its_first_chunk(app):
    async def run() -> None:
        ready = asyncio.Event()

        async def rows() -> AsyncIterator[bytes]:
            await ready.wait()
            yield b"rows"

        async def export() -> StreamingResponse:
            return StreamingResponse(rows())

        app.add_api_route("/export", export)  # a route of the application's own
        async with app.router.lifespan_context(app):
            protocol, transport, state = connect(app)
            protocol.data_received(b"GET /export HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await asyncio.sleep(0.2)
            assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
            ready.set()
            await answered(state)
            assert b"".join(transport.writes[1:]) == b"4\r\nrows\r\n0\r\n\r\n"

    asyncio.run(run())


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
@pytest.mark.parametrize("pipelined", [False, True], ids=["alone", "pipelined"])
def test_a_watch_stream_sends_its_head_at_once_and_every_event_after(server, client, accept, pipelined):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    request = f"GET /v1/feed?watch=true HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n".encode()
    # A request pipelined behind the watch keeps the stream with the server (no takeover).
    sock.sendall(request + (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" if pipelined else b""))
    received = b""
    while b"\r\n\r\n" not in received:  # nothing is written meanwhile: only the head can come
        data = sock.recv(65536)
        assert data, "the connection closed before the head"
        received += data
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"content-type: {accept}".encode() in received.lower()
    for i in range(3):  # each event arrives on its own, not with the next one
        client.put(f"/v1/feed/f{i}", json={"i": i})
        while received.count(b'"type":"ADDED"') < i + 1:
            data = sock.recv(65536)
            assert data, "the stream ended early"
            received += data
    sock.close()


class FixedLengthCycle:
    """What a `HeldHead` sees of uvicorn's cycle writing a response of known length."""

    chunked_encoding = False

    def __init__(self) -> None:
        self.transport = RecordingTransport()


def test_a_released_head_lets_later_writes_through():
    cycle = FixedLengthCycle()
    connection = cycle.transport
    held = HeldHead(cycle)
    held.write(b"head")
    held.release()
    assert cycle.transport is connection and connection.writes == [b"head"]
    held.write(b"one")  # one who took the stand-in while it held writes straight through
    held.write(b"two")
    assert connection.writes == [b"head", b"one", b"two"]


def test_pipelined_responses_leave_in_order_when_the_first_is_a_head_alone():
    async def app(scope, receive, send) -> None:
        # As the app's outermost layer does: hold the head, release it when the app returns.
        if scope["type"] != "http":
            return
        held = hold_head(send)
        body = b"" if scope["method"] == "HEAD" else b"ok"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": body})
        await asyncio.sleep(0.05)  # work after the response (a background task)
        if held is not None:
            held.release()

    writes = asyncio.run(
        exchange(
            app,
            b"HEAD /a HTTP/1.1\r\nHost: localhost\r\n\r\nGET /b HTTP/1.1\r\nHost: localhost\r\n\r\n",
            responses=2,
        )
    )
    head, get = writes
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")  # the HEAD's
    assert get.startswith(b"HTTP/1.1 200 OK\r\n") and get.endswith(b"\r\n\r\nok")


def test_a_response_to_a_client_already_gone_is_dropped_without_error():
    cycle = FixedLengthCycle()
    connection = cycle.transport
    held = HeldHead(cycle)
    held.write(b"head")
    connection.close()  # the client reset the connection while the response was being made
    held.write(b"body")
    held.release()
    assert connection.writes == [] and cycle.transport is connection
