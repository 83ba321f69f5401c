"""Long-poll: one JSON answer per request, as soon as at least one event is ready.

`revision` in the answer is the `since` of the next poll, so a poller sees every change once
even when several arrive between its polls.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ..events import bookmark_json
from ..watch import OpenedWatch, initial_event_json


async def poll(opened: OpenedWatch, timeout: float, limit: int) -> Response:
    watcher = opened.watcher
    parts: list[bytes] = []
    if opened.initial is not None:
        parts = [initial_event_json(row) for row in opened.initial]
        parts.append(bookmark_json(opened.initial_revision, initial_events_end=True))
    else:
        with watcher:
            events = await watcher.next(limit, timeout)
        parts = [c.framed(kind, 0) for kind, c in events]
    body = b'{"events":[%s],"revision":%d}' % (b",".join(parts), watcher.cursor)
    return Response(body, media_type="application/json")


def empty(revision: int) -> dict[str, Any]:
    return orjson.loads(b'{"events":[],"revision":%d}' % revision)
