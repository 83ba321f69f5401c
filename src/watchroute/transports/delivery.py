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
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from watchroute.core.change import Change
from watchroute.core.hub import SharedEvents
from watchroute.transports import eager
from watchroute.wire.events import bookmark_json, initial_event_json
from watchroute.wire.framing import Framing

if TYPE_CHECKING:  # opening a watch needs the store and the hub; delivering one does not
    from watchroute.watch.open import OpenedWatch

# One write of several frames to the connection.
Write = Callable[[list[bytes]], Coroutine[Any, Any, None]]
# The same write started at once, from a commit: None when it is done, else what finishes it
# once the socket takes more.
SendNow = Callable[[list[bytes]], Awaitable[None] | None]


def encode(framing: Framing, events: list[tuple[str, Change]]) -> list[bytes]:
    """The frames of one write. Framings with a `shared_key` join the events into one frame,
    kept on a delivery the hub shares among watchers (`SharedEvents`) so that it is built and
    joined once per commit, not once per watcher."""
    key = framing.shared_key
    if key is None:
        return [framing.change(kind, c) for kind, c in events]
    shared = events.frames if isinstance(events, SharedEvents) else None
    if shared is not None:
        frames = shared.get(key)
        if frames is not None:
            return frames
    if len(events) == 1:  # the change's own cached frame, not a copy of it
        frames = [framing.change(*events[0])]
    else:
        frames = [b"".join([framing.change(kind, c) for kind, c in events])]
    if shared is not None:
        shared[key] = frames
    return frames


class Delivery:
    __slots__ = ("_finisher", "_send", "_write", "framing", "hub", "last_output", "loop", "opened")

    def __init__(
        self, opened: OpenedWatch, framing: Framing, write: Write, send: SendNow | None = None
    ) -> None:
        self.opened = opened
        self.framing = framing
        self.hub = opened.watcher.hub  # counts what goes out, once per write, for /metrics
        self._write = write
        self._send = send or self._send_eagerly
        self.loop = asyncio.get_running_loop()
        self.last_output = self.loop.time()
        self._finisher: asyncio.Future[None] | None = None

    async def write(self, frames: list[bytes], events: int = 0) -> None:
        """Write `frames`, which carry `events` changes or initial states (not bookmarks)."""
        if self._finisher is not None:
            # A write pushed from a commit is still going out: it carries earlier revisions.
            await self._finisher
        if frames:
            await self._write(frames)
            self.last_output = self.loop.time()
            hub = self.hub
            hub.sent_events += events
            hub.sent_bytes += len(frames[0]) if len(frames) == 1 else sum(map(len, frames))

    def push(self, events: list[tuple[str, Change]]) -> None:
        """Write a commit's events from the hub, without waking the watch's task."""
        watcher = self.opened.watcher
        try:
            frames = encode(self.framing, events)
            rest = self._send(frames)
        except Exception:  # the connection is broken: end this watch
            watcher.close()
            return
        self.last_output = self.loop.time()
        # Two integer adds per write, inline: a function call here cost as much again.
        hub = self.hub
        hub.sent_events += len(events)
        hub.sent_bytes += len(frames[0]) if len(frames) == 1 else sum(map(len, frames))
        if rest is not None:
            # The socket pushed back. Nothing more is pushed until this write is out; commits
            # meanwhile wake the watcher, which reads them from the window after it.
            watcher.block()
            self._finisher = asyncio.ensure_future(self._finish(rest))

    def _send_eagerly(self, frames: list[bytes]) -> Awaitable[None] | None:
        pending = eager.send_now(self._write(frames))
        return None if pending is None else eager.finish(pending)

    async def _finish(self, rest: Awaitable[None]) -> None:
        await rest
        self._finisher = None
        self.opened.watcher.unblock()

    async def run(self, *, heartbeat: float, timeout: float | None, max_events_per_write: int) -> None:
        """Send the initial state (if asked for), then changes and heartbeats until the watcher
        closes or `timeout` passes. Raises Problem (410) when the watcher falls past the horizon, or
        when its initial state did not go out within `initial_snapshot_seconds`."""
        watcher = self.opened.watcher
        try:
            if watcher.initial is not None and not await self._send_initial():
                return  # the watch ended before all of it went out
            watcher.sync(self.push)
            await self._stream(heartbeat, timeout, max_events_per_write)
            watcher.unsync()
            await self.write([])  # waits for a pending pushed write
        finally:
            watcher.unsync()
            if self._finisher is not None:
                # Whoever writes next (an ERROR event, the end of the stream) must not wait on it.
                self._finisher.cancel()
                self._finisher = None

    async def _send_initial(self) -> bool:
        """The initial state, one page per write, each page read once the connection has taken
        the last (initial.py); then its bookmark. False when the watch ended first."""
        watcher, framing = self.opened.watcher, self.framing
        while not watcher.closed:  # the client left, or the server is stopping: read no more
            rows = await watcher.initial_page()
            if not rows or watcher.closed:
                break
            frames = [framing.initial(initial_event_json(row)) for row in rows]
            del rows  # while the write waits, only the page's frames stay
            await self.write(frames, len(frames))
            del frames
        if watcher.closed:
            return False
        rev = self.opened.initial_revision
        await self.write([framing.bookmark(bookmark_json(rev, initial_events_end=True), rev)])
        return True

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
                await self.write(encode(framing, events), len(events))
