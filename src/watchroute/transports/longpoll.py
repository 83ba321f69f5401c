"""Long-poll: one JSON answer per request, as soon as at least one event is ready.

`revision` in the answer is the `since` of the next poll, so a poller sees every change once
even when several arrive between its polls.
"""

from __future__ import annotations

from starlette.responses import Response

from ..events import JSON, PATCHES, bookmark_json
from ..watch import OpenedWatch, initial_event_json


async def poll(opened: OpenedWatch, timeout: float, limit: int) -> Response:
    watcher = opened.watcher
    with watcher:  # entered even when answered at once: it holds a slot of the watch caps
        if opened.initial is not None:
            parts = [initial_event_json(row) for row in opened.initial]
            parts.append(bookmark_json(opened.initial_revision, initial_events_end=True))
        else:
            events = await watcher.next(limit, timeout)
            flags = JSON | PATCHES if opened.patches else JSON
            parts = [c.framed(kind, flags) for kind, c in events]
    body = b'{"events":[%s],"revision":%d}' % (b",".join(parts), watcher.cursor)
    return Response(body, media_type="application/json")
