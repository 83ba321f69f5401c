"""Delivering one watch's events to one connection, whatever the transport.

While the watcher is caught up, the hub writes each commit's events straight to the connection
(`push`): no task wakes up per event. Otherwise the watch's task is the watcher's only task: it
sleeps until the hub wakes it, then writes everything ready in one write. While the connection
will not take more, the write waits and the cursor stays where it is: nothing queues up for a
slow client. Streaming HTTP (SSE, NDJSON) and WebSocket differ only in their framing and in how
a write reaches the socket.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

from ..events import Change, bookmark_json
from ..watch import OpenedWatch, initial_event_json
from . import eager
from .framing import Framing

# One write of several frames to the connection.
Write = Callable[[list[bytes]], Coroutine[Any, Any, None]]


class Delivery:
    __slots__ = ("_finisher", "_write", "framing", "last_output", "loop", "opened")

    def __init__(self, opened: OpenedWatch, framing: Framing, write: Write) -> None:
        self.opened = opened
        self.framing = framing
        self._write = write
        self.loop = asyncio.get_running_loop()
        self.last_output = self.loop.time()
        self._finisher: asyncio.Future[None] | None = None

    async def write(self, frames: list[bytes]) -> None:
        if self._finisher is not None:
            # A write pushed from a commit is still going out: it carries earlier revisions.
            await self._finisher
        if frames:
            await self._write(frames)
            self.last_output = self.loop.time()

    def push(self, events: list[tuple[str, Change]]) -> None:
        """Write a commit's events from the hub, without waking the watch's task."""
        watcher = self.opened.watcher
        frames = [self.framing.change(kind, change) for kind, change in events]
        try:
            pending = eager.send_now(self._write(frames))
        except Exception:  # the connection is broken: end this watch
            watcher.close()
            return
        self.last_output = self.loop.time()
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
            watcher.push = self.push

    async def run(self, *, heartbeat: float, timeout: float | None, max_events_per_write: int) -> None:
        """Send the initial state (if asked for), then changes and heartbeats until the watcher
        closes or `timeout` passes. Raises Problem (410) when the watcher falls past the horizon."""
        opened, framing, watcher = self.opened, self.framing, self.opened.watcher
        try:
            if opened.initial is not None:
                frames = [framing.initial(initial_event_json(row)) for row in opened.initial]
                rev = opened.initial_revision
                frames.append(framing.bookmark(bookmark_json(rev, initial_events_end=True), rev))
                for start in range(0, len(frames), max_events_per_write):
                    await self.write(frames[start : start + max_events_per_write])
            watcher.push = self.push
            await self._stream(heartbeat, timeout, max_events_per_write)
            watcher.push = None
            await self.write([])  # waits for a pending pushed write
        finally:
            watcher.push = None
            if self._finisher is not None:
                # Whoever writes next (an ERROR event, the end of the stream) must not wait on it.
                self._finisher.cancel()
                self._finisher = None

    async def _stream(self, heartbeat: float, timeout: float | None, max_events_per_write: int) -> None:
        watcher, framing, loop = self.opened.watcher, self.framing, self.loop
        deadline = loop.time() + timeout if timeout else math.inf
        while not watcher.closed:
            now = loop.time()
            if now >= deadline:
                return
            if now - self.last_output >= heartbeat:
                # Proves the connection alive and moves a filtered watcher's resume point.
                rev = watcher.cursor
                await self.write([framing.bookmark(bookmark_json(rev), rev)])
                continue
            wait = min(self.last_output + heartbeat, deadline) - now
            events = await watcher.next(max_events_per_write, wait)
            if events:
                await self.write([framing.change(kind, c) for kind, c in events])
