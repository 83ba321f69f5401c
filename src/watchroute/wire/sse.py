"""Server-Sent Events framing, as EventSource expects it.

Every event is one message with no `event:` field, so `onmessage` sees them all. Changes and
bookmarks carry `id: <revision>`, so a reconnecting EventSource resumes by itself through
`Last-Event-ID`; initial-state events carry no id (they are not a resume point).
"""

from __future__ import annotations

from watchroute.core.change import Change
from watchroute.wire.events import PATCHES, SSE, framed, sse_frame


class SSEFraming:
    media_type = "text/event-stream"
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    shared_key: object = "sse"

    def __init__(self, retry_ms: int, patches: bool = False) -> None:
        self.retry_ms = retry_ms
        self.flags = SSE | PATCHES if patches else SSE  # format=patch
        if patches:
            # Patch frames differ from full ones: share them only among patch watches.
            self.shared_key = "sse+patch"

    def preamble(self) -> bytes:
        return b"retry: %d\n\n" % self.retry_ms

    def change(self, kind: str, change: Change) -> bytes:
        return framed(change, kind, self.flags)

    def initial(self, event_json: bytes) -> bytes:
        return sse_frame(event_json, None)

    def bookmark(self, event_json: bytes, revision: int) -> bytes:
        return sse_frame(event_json, revision)

    def error(self, event_json: bytes) -> bytes:
        return sse_frame(event_json, None)
