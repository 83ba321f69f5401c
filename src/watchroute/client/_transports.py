"""One connection of a watch, per transport: open it, yield the server's event dicts in order.

Each reader ends in one of three ways: it returns (the server ended the stream cleanly), it
raises `Retry` or a network error (worth reconnecting), or it raises an `APIError` (the server
refused the watch; 410 is `Expired`). The reconnecting, the resume point and the backoff are the
watch's job (`_watch.py`), not the readers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args
from urllib.parse import quote

import httpx
import orjson
from httpx_sse import EventSource
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from watchroute.client.errors import RETRY_STATUSES, APIError, error_from_body, retry_after

Transport = Literal["sse", "ws", "ndjson", "longpoll"]
TRANSPORTS: tuple[Transport, ...] = get_args(Transport)
# Headers of the HTTP client that a WebSocket handshake must not carry: the handshake's own
# (the websockets library writes them), hop-by-hop ones, and what describes an HTTP body.
NOT_FOR_HANDSHAKE = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "content-type",
        "accept",
        "accept-encoding",
        "user-agent",  # passed on as the handshake's User-Agent instead
    }
)


class Retry(Exception):
    """This connection is over; reconnect after at least `after` seconds."""

    def __init__(self, why: str, after: float = 0.0) -> None:
        super().__init__(why)
        self.after = after


@dataclass
class Connection:
    """What a reader needs to open one connection, and how it reports back."""

    http: httpx.AsyncClient
    url: str  # the watch URL: base + /v1/{collection}[/{id}]
    params: dict[str, Any]  # since / initial / filter / heartbeat
    heartbeat: float
    dead_after: float  # silence longer than this means the connection is dead
    connected: Callable[[], None]  # the server accepted: the backoff starts over
    retry_hint: Callable[[float], None]  # the server's SSE `retry:`, in seconds
    tls: Callable[[], ssl.SSLContext]  # the TLS context of a wss:// connection (the client's)


def resource_path(collection: str, id: str | None = None) -> str:
    path = f"/v1/{quote(collection, safe='')}"
    return path if id is None else f"{path}/{quote(id, safe='')}"


def refusal(status: int, headers: Mapping[str, str], body: bytes) -> Exception:
    """The exception for a refused watch request, over HTTP or at a WebSocket handshake: `Retry`
    for a status that says "later", else the server's `APIError`."""
    if status in RETRY_STATUSES:
        return Retry(f"HTTP {status}", retry_after(headers.get("retry-after")))
    return error_from_body(status, body, headers)


async def _accepted(conn: Connection, response: httpx.Response) -> None:
    """Raise the refusal unless the server answered 200; then the connection counts as up."""
    if response.status_code != 200:
        raise refusal(response.status_code, response.headers, await response.aread())
    conn.connected()


@contextlib.asynccontextmanager
async def _stream(conn: Connection, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
    """An accepted `watch=true` response, to read as it streams (SSE and NDJSON)."""
    params = {**conn.params, "watch": "true"}
    # The read timeout is the heartbeat check: the server writes at least every `heartbeat`.
    timeout = httpx.Timeout(10.0, read=conn.dead_after)
    async with conn.http.stream("GET", conn.url, params=params, headers=headers, timeout=timeout) as response:
        await _accepted(conn, response)
        yield response


async def read_sse(conn: Connection) -> AsyncGenerator[dict[str, Any], None]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    async with (
        _stream(conn, headers) as response,
        contextlib.aclosing(EventSource(response).aiter_sse()) as messages,
    ):
        async for message in messages:
            if message.retry is not None:
                conn.retry_hint(message.retry / 1000)
            if message.data:
                yield orjson.loads(message.data)


async def read_ndjson(conn: Connection) -> AsyncGenerator[dict[str, Any], None]:
    async with (
        _stream(conn, {"Accept": "application/x-ndjson"}) as response,
        # httpx annotates aiter_lines as an AsyncIterator; it is an async generator (aclose).
        contextlib.aclosing(cast(AsyncGenerator[str, None], response.aiter_lines())) as lines,
    ):
        async for line in lines:
            if line.strip():
                yield orjson.loads(line)


def handshake_headers(http: httpx.AsyncClient, url: httpx.URL) -> list[tuple[str, str]]:
    """The HTTP client's headers that a WebSocket handshake should carry too: credentials
    (Authorization, X-API-Key...), custom headers, and the cookies it holds for `url`."""
    headers = [(k, v) for k, v in http.headers.multi_items() if k.lower() not in NOT_FOR_HANDSHAKE]
    if http.cookies and not any(k.lower() == "cookie" for k, _ in headers):
        # httpx's cookie jar picks the cookies that match the URL (domain, path, secure).
        request = httpx.Request("GET", url.copy_with(scheme="https" if url.scheme == "wss" else "http"))
        http.cookies.set_cookie_header(request)
        if "cookie" in request.headers:
            headers.append(("Cookie", request.headers["cookie"]))
    return headers


async def read_ws(conn: Connection) -> AsyncGenerator[dict[str, Any], None]:
    url = conn.http.base_url.join(conn.url).copy_merge_params({**conn.params, "watch": "true"})
    url = url.copy_with(scheme="wss" if url.scheme == "https" else "ws")
    options: dict[str, Any] = {}
    if url.scheme == "wss":
        options["ssl"] = conn.tls()
    if "user-agent" in conn.http.headers:
        options["user_agent_header"] = conn.http.headers["user-agent"]
    try:
        socket = await ws_connect(
            str(url),
            open_timeout=10,
            close_timeout=2,
            additional_headers=handshake_headers(conn.http, url),
            max_size=None,
            **options,
        )
    except InvalidStatus as exc:
        refused = exc.response
        raise refusal(refused.status_code, refused.headers, refused.body or b"") from None
    async with socket:
        first = True
        while True:
            try:
                async with asyncio.timeout(conn.dead_after):
                    message = await socket.recv()
            except TimeoutError:
                # A dead peer would not answer a closing handshake either: drop the connection.
                socket.transport.abort()
                raise Retry("missed heartbeats") from None
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code in (1000, 1001, 1012):
                    return  # a clean end: timeout or a restarting server
                raise Retry(f"connection closed: {exc}") from None
            if first:
                conn.connected()
                first = False
            yield orjson.loads(message)


async def read_longpoll(conn: Connection) -> AsyncGenerator[dict[str, Any], None]:
    """Polls until something fails. After each answer, a BOOKMARK at the answer's `revision`
    (when it is past the last event) carries the resume point, as a heartbeat would."""
    params = {**conn.params, "watch": "longpoll", "timeout": conn.heartbeat}
    params.pop("heartbeat", None)
    timeout = httpx.Timeout(10.0, read=conn.dead_after + conn.heartbeat)
    while True:
        response = await conn.http.get(conn.url, params=params, timeout=timeout)
        await _accepted(conn, response)
        body = response.json()
        events = body["events"]
        for event in events:
            yield event
        revision = body["revision"]
        if not events or events[-1].get("revision") != revision:
            yield {"type": "BOOKMARK", "revision": revision}
        params.pop("initial", None)
        params["since"] = revision


READERS: dict[Transport, Callable[[Connection], AsyncGenerator[dict[str, Any], None]]] = {
    "sse": read_sse,
    "ws": read_ws,
    "ndjson": read_ndjson,
    "longpoll": read_longpoll,
}

__all__ = [
    "READERS",
    "RETRY_STATUSES",
    "TRANSPORTS",
    "APIError",
    "Connection",
    "Retry",
    "Transport",
    "retry_after",
]
