"""A streaming watch over one HTTP response (SSE or NDJSON)."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..events import error_json
from ..problems import Problem
from ..watch import OpenedWatch
from ..watcher import Watcher
from .delivery import Delivery
from .framing import Framing

# The scope key under which the app leaves the server's own `send` (app.py explains why).
SERVER_SEND = "watchroute.server_send"


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
        watcher, framing = self.opened.watcher, self.framing
        headers = [(b"content-type", framing.media_type.encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in framing.headers.items()]

        # Body chunks skip the middleware layers, which only watch the start message.
        send_body = scope.get(SERVER_SEND, send)

        async def write(frames: list[bytes]) -> None:
            body = frames[0] if len(frames) == 1 else b"".join(frames)
            await send_body({"type": "http.response.body", "body": body, "more_body": True})

        with watcher:
            listener = asyncio.create_task(_close_on_disconnect(receive, watcher))
            try:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                delivery = Delivery(self.opened, framing, write)
                preamble = framing.preamble()
                if preamble:
                    await delivery.write([preamble])
                try:
                    await delivery.run(
                        heartbeat=self.heartbeat,
                        timeout=self.timeout,
                        max_events_per_write=self.max_events_per_write,
                    )
                except Problem as problem:
                    await delivery.write([framing.error(error_json(problem.to_dict()))])
                await send_body({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                listener.cancel()


async def _close_on_disconnect(receive: Receive, watcher: Watcher) -> None:
    with contextlib.suppress(Exception):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
    watcher.close()
