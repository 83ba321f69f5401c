"""Long-poll: one JSON answer per request, as soon as at least one event is ready.

`revision` in the answer is the `since` of the next poll, so a poller sees every change once
even when several arrive between its polls.

With `initial=true` the answer is the whole initial state and its bookmark. Its body goes out as
it is read, a page at a time, each page once the connection has taken the last (initial.py): a
poller that does not read holds one page, not the collection. An initial state that cannot go
out whole (it took longer than `initial_snapshot_seconds`) ends with an ERROR event instead of
the bookmark, as a stream would.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from watchroute.core.problems import Problem
from watchroute.store import Row
from watchroute.transports.stream import close_on_disconnect
from watchroute.watch.open import OpenedWatch
from watchroute.wire.events import JSON, PATCHES, bookmark_json, error_json, framed, initial_event_json
from watchroute.wire.problems import send_problem

JSON_TYPE = (b"content-type", b"application/json")


async def poll(opened: OpenedWatch, timeout: float, limit: int) -> Response:
    watcher = opened.watcher
    if watcher.initial is not None:
        return InitialAnswer(opened)
    with watcher:  # entered even when answered at once: it holds a slot of the watch caps
        events = await watcher.next(limit, timeout)
        flags = JSON | PATCHES if opened.patches else JSON
        parts = [framed(c, kind, flags) for kind, c in events]
    body = b'{"events":[%s],"revision":%d}' % (b",".join(parts), watcher.cursor)
    hub = watcher.hub
    hub.sent_events += len(parts)
    hub.sent_bytes += len(body)
    return Response(body, media_type="application/json")


class InitialAnswer(Response):
    """`{"events":[ADDED..., BOOKMARK],"revision":R}`, written a page at a time."""

    def __init__(self, opened: OpenedWatch) -> None:
        self.opened = opened
        # A Response subclass so that routes may return it; it builds its own headers.
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = self.opened.watcher
        with watcher:
            listener = asyncio.create_task(close_on_disconnect(receive, watcher))
            try:
                try:
                    rows = await watcher.initial_page()
                except Problem as problem:  # nothing has gone out: an answer of its own
                    await send_problem(problem, send)
                    return
                start = {"type": "http.response.start", "status": 200, "headers": [JSON_TYPE]}
                await send(start)
                await self._body(rows, send)
            finally:
                listener.cancel()

    async def _body(self, rows: list[Row], send: Send) -> None:
        watcher, rev = self.opened.watcher, self.opened.initial_revision
        hub = watcher.hub
        head = b'{"events":['
        try:
            while rows:
                if watcher.closed:
                    return  # the client has gone: read no more
                body = head + b",".join([initial_event_json(row) for row in rows]) + b","
                head = b""
                hub.sent_events += len(rows)
                hub.sent_bytes += len(body)
                del rows
                # The server's send waits while the connection will not take more.
                await send({"type": "http.response.body", "body": body, "more_body": True})
                del body
                rows = await watcher.initial_page()
            end = bookmark_json(rev, initial_events_end=True)
        except Problem as problem:
            # The state cannot go out whole: the answer ends with the ERROR, as a stream would.
            end = error_json(problem.to_dict())
        body = head + end + b'],"revision":%d}' % rev
        hub.sent_bytes += len(body)
        await send({"type": "http.response.body", "body": body, "more_body": False})
