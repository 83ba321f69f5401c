"""A streaming watch over one HTTP response (SSE or NDJSON).

The response's task is the watcher's only task: it sleeps until the hub wakes it, then writes
everything ready in one send. While the socket will not take more, `send` waits and the cursor
stays where it is; nothing queues up for this client.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..events import bookmark_json, error_json
from ..problems import Problem
from ..watch import OpenedWatch, initial_event_json
from .framing import Framing

INITIAL_CHUNK_BYTES = 64 * 1024


class WatchStream(Response):
    """An ASGI response that runs one watch until the client leaves, the watch's `timeout`
    passes, the server shuts down, or the watcher falls behind the horizon (an ERROR event)."""

    def __init__(
        self,
        opened: OpenedWatch,
        framing: Framing,
        *,
        heartbeat: float,
        timeout: float | None,
        max_events_per_write: int,
    ) -> None:
        self.opened = opened
        self.framing = framing
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.max_events_per_write = max_events_per_write
        # A Response subclass so that routes may return it; it builds its own headers.
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = self.opened.watcher
        framing = self.framing
        headers = [(b"content-type", framing.media_type.encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in framing.headers.items()]
        with watcher:
            listener = asyncio.create_task(_close_on_disconnect(receive, watcher))
            try:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await self._send(send, framing.preamble())
                await self._send_initial(send)
                await self._stream(send)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                listener.cancel()

    async def _send(self, send: Send, body: bytes) -> None:
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _send_initial(self, send: Send) -> None:
        opened, framing = self.opened, self.framing
        if opened.initial is None:
            return
        chunk: list[bytes] = []
        size = 0
        for row in opened.initial:
            frame = framing.initial(initial_event_json(row))
            chunk.append(frame)
            size += len(frame)
            if size >= INITIAL_CHUNK_BYTES:
                await self._send(send, b"".join(chunk))
                chunk, size = [], 0
        rev = opened.initial_revision
        chunk.append(framing.bookmark(bookmark_json(rev, initial_events_end=True), rev))
        await self._send(send, b"".join(chunk))

    async def _stream(self, send: Send) -> None:
        watcher, framing = self.opened.watcher, self.framing
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout if self.timeout else math.inf
        while not watcher.closed:
            wait = min(self.heartbeat, deadline - loop.time())
            if wait <= 0:
                return
            try:
                events = await watcher.next(self.max_events_per_write, wait)
            except Problem as problem:
                await self._send(send, framing.error(error_json(problem.to_dict())))
                return
            if events:
                await self._send(send, b"".join(framing.change(k, c) for k, c in events))
            elif not watcher.closed and loop.time() < deadline:
                # A heartbeat: proves the stream alive and moves a filtered watcher's resume point.
                rev = watcher.cursor
                await self._send(send, framing.bookmark(bookmark_json(rev), rev))


async def _close_on_disconnect(receive: Receive, watcher: object) -> None:
    with contextlib.suppress(Exception):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
    watcher.close()  # type: ignore[attr-defined]
