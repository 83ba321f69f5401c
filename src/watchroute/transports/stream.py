"""A streaming watch over one HTTP response (SSE or NDJSON)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from watchroute.core.problems import Problem
from watchroute.core.watcher import Watcher
from watchroute.transports.delivery import Delivery, SendNow, Write
from watchroute.transports.takeover import StreamConnection, can_take_over, take_over
from watchroute.watch.open import OpenedWatch
from watchroute.wire.events import error_json
from watchroute.wire.framing import StreamFraming

log = logging.getLogger("watchroute")

# The scope key under which the app leaves the server's own `send` (app.py explains why).
SERVER_SEND = "watchroute.server_send"


class WatchStream(Response):
    """An ASGI response that runs one watch until the client leaves, the watch's `timeout`
    passes, the server shuts down, or the watcher falls behind the horizon (an ERROR event)."""

    def __init__(
        self,
        opened: OpenedWatch,
        framing: StreamFraming,
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
        framing = self.framing
        headers = [(b"content-type", framing.media_type.encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in framing.headers.items()]
        # Body chunks skip the middleware layers, which only watch the start message.
        send_body = scope.get(SERVER_SEND, send)
        if can_take_over(send_body):
            headers.append((b"connection", b"close"))
        # The start goes through every middleware layer (CORS and security headers).
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        connection = take_over(send_body)
        if connection is not None:
            # A client hears a heartbeat at least every `heartbeat` seconds and gives up after
            # two missed (and a second); the server gives up on it a little after that.
            connection.give_up_after(2 * self.heartbeat + 2)
            # The watch goes on in a task of its own; the request is over for the server.
            asyncio.get_running_loop().create_task(self._run_on(connection))
            return

        async def write(frames: list[bytes]) -> None:
            body = frames[0] if len(frames) == 1 else b"".join(frames)
            await send_body({"type": "http.response.body", "body": body, "more_body": True})

        watcher = self.opened.watcher
        with watcher:
            listener = asyncio.create_task(close_on_disconnect(receive, watcher))
            try:
                await self._deliver(write)
                await send_body({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                listener.cancel()

    async def _run_on(self, connection: StreamConnection) -> None:
        watcher = self.opened.watcher
        try:
            with watcher:
                connection.on_close(watcher.close)
                await self._deliver(connection.write, connection.send)
        except ConnectionError:
            pass  # the client left in the middle of a write
        except Exception:
            log.exception("watch stream failed")
        finally:
            connection.end()
            if connection.timed_out:
                watcher.hub.unresponsive += 1

    async def _deliver(self, write: Write, send: SendNow | None = None) -> None:
        framing = self.framing
        delivery = Delivery(self.opened, framing, write, send)
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


async def close_on_disconnect(receive: Receive, watcher: Watcher) -> None:
    with contextlib.suppress(Exception):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
    watcher.close()
