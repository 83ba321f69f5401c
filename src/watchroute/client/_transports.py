"""One connection of a watch, per transport: open it, yield the server's event dicts in order.

Each reader ends in one of three ways: it returns (the server ended the stream cleanly), it
raises `Retry` or a network error (worth reconnecting), or it raises an `APIError` (the server
refused the watch; 410 is `Expired`). The reconnecting, the resume point and the backoff are the
watch's job (`_watch.py`), not the readers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import quote

import httpx
import orjson
from httpx_sse import EventSource
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .errors import APIError, error_from_body

Transport = Literal["sse", "ws", "ndjson", "longpoll"]
TRANSPORTS: tuple[Transport, ...] = get_args(Transport)
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


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


def resource_path(collection: str, id: str | None = None) -> str:
    path = f"/v1/{quote(collection, safe='')}"
    return path if id is None else f"{path}/{quote(id, safe='')}"


def retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); 0 when absent."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


def refusal(status: int, headers: Mapping[str, str], body: bytes) -> Exception:
    """The exception for a refused watch request, over HTTP or at a WebSocket handshake: `Retry`
    for a status that says "later", else the server's `APIError`."""
    if status in RETRY_STATUSES:
        return Retry(f"HTTP {status}", retry_after(headers.get("retry-after")))
    return error_from_body(status, body)


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


async def read_sse(conn: Connection) -> AsyncIterator[dict[str, Any]]:
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


async def read_ndjson(conn: Connection) -> AsyncIterator[dict[str, Any]]:
    async with (
        _stream(conn, {"Accept": "application/x-ndjson"}) as response,
        contextlib.aclosing(response.aiter_lines()) as lines,
    ):
        async for line in lines:
            if line.strip():
                yield orjson.loads(line)


async def read_ws(conn: Connection) -> AsyncIterator[dict[str, Any]]:
    url = conn.http.base_url.join(conn.url).copy_merge_params({**conn.params, "watch": "true"})
    url = url.copy_with(scheme="wss" if url.scheme == "https" else "ws")
    headers = [(k, v) for k, v in conn.http.headers.items() if k.lower() == "authorization"]
    try:
        socket = await ws_connect(
            str(url), open_timeout=10, close_timeout=2, additional_headers=headers, max_size=None
        )
    except InvalidStatus as exc:
        refused = exc.response
        raise refusal(refused.status_code, refused.headers, refused.body or b"") from None
    async with socket:
        first = True
        while True:
            try:
                message = await asyncio.wait_for(socket.recv(), conn.dead_after)
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


async def read_longpoll(conn: Connection) -> AsyncIterator[dict[str, Any]]:
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


READERS: dict[Transport, Callable[[Connection], AsyncIterator[dict[str, Any]]]] = {
    "sse": read_sse,
    "ws": read_ws,
    "ndjson": read_ndjson,
    "longpoll": read_longpoll,
}

__all__ = ["READERS", "TRANSPORTS", "APIError", "Connection", "Retry", "Transport"]
