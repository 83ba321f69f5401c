"""A streaming watch over one HTTP response (SSE or NDJSON).

While the watcher is caught up, the hub writes each commit's events straight to the socket
(`push`). Otherwise the response's task is the watcher's only task: it sleeps until the hub
wakes it, then writes everything ready in one send. While the socket will not take more, `send`
waits and the cursor stays where it is; nothing queues up for this client.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..events import Change, bookmark_json, error_json
from ..problems import Problem
from ..watch import OpenedWatch, initial_event_json
from . import eager
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
        self._asgi_send = send
        self._loop = asyncio.get_running_loop()
        self._last_output = self._loop.time()
        self._finisher: asyncio.Future[None] | None = None
        with watcher:
            listener = asyncio.create_task(_close_on_disconnect(receive, watcher))
            try:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await self._write(framing.preamble())
                await self._send_initial()
                watcher.push = self._push
                await self._stream()
                watcher.push = None
                await self._write(b"")  # waits for a pending pushed write
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                watcher.push = None
                listener.cancel()
                if self._finisher is not None:
                    self._finisher.cancel()

    async def _write(self, body: bytes) -> None:
        if self._finisher is not None:
            # A write pushed from a commit is still going out: it carries earlier revisions.
            await self._finisher
        if body:
            await self._asgi_send({"type": "http.response.body", "body": body, "more_body": True})
            self._last_output = self._loop.time()

    def _push(self, events: list[tuple[str, Change]]) -> None:
        """Write a commit's events from the hub, without waking this stream's task."""
        watcher = self.opened.watcher
        body = b"".join(self.framing.change(kind, change) for kind, change in events)
        message = {"type": "http.response.body", "body": body, "more_body": True}
        try:
            pending = eager.send_now(self._asgi_send(message))
        except Exception:  # the connection is broken: end this watch
            watcher.close()
            return
        self._last_output = self._loop.time()
        if pending is not None:
            # The socket pushed back. Nothing more is pushed until this write is out; commits
            # meanwhile wake the watcher, which reads them from the window after it.
            watcher.push = None
            self._finisher = asyncio.ensure_future(self._finish(pending))

    async def _finish(self, pending: eager.Pending) -> None:
        await eager.finish(pending)
        self._finisher = None
        watcher = self.opened.watcher
        if not watcher.closed:
            watcher.push = self._push

    async def _send_initial(self) -> None:
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
                await self._write(b"".join(chunk))
                chunk, size = [], 0
        rev = opened.initial_revision
        chunk.append(framing.bookmark(bookmark_json(rev, initial_events_end=True), rev))
        await self._write(b"".join(chunk))

    async def _stream(self) -> None:
        watcher, framing, loop = self.opened.watcher, self.framing, self._loop
        deadline = loop.time() + self.timeout if self.timeout else math.inf
        while not watcher.closed:
            now = loop.time()
            if now >= deadline:
                return
            if now - self._last_output >= self.heartbeat:
                # Proves the stream alive and moves a filtered watcher's resume point.
                rev = watcher.cursor
                await self._write(framing.bookmark(bookmark_json(rev), rev))
                continue
            wait = min(self._last_output + self.heartbeat, deadline) - now
            try:
                events = await watcher.next(self.max_events_per_write, wait)
            except Problem as problem:
                await self._write(framing.error(error_json(problem.to_dict())))
                return
            if events:
                await self._write(b"".join(framing.change(k, c) for k, c in events))


async def _close_on_disconnect(receive: Receive, watcher: object) -> None:
    with contextlib.suppress(Exception):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
    watcher.close()  # type: ignore[attr-defined]
