"""The framing seam: what a streaming transport puts around each event."""

from __future__ import annotations

from typing import Protocol

from watchroute.core.change import Change


class Framing(Protocol):
    """What a delivery frames each event with, over a response body or a WebSocket."""

    # Frames that may be joined into one write and whose bytes depend on nothing but the event:
    # every watch with the same key shares them. None for message framings (WebSocket).
    shared_key: object

    def change(self, kind: str, change: Change) -> bytes: ...
    def initial(self, event_json: bytes) -> bytes: ...
    def bookmark(self, event_json: bytes, revision: int) -> bytes: ...
    def error(self, event_json: bytes) -> bytes: ...


class StreamFraming(Framing, Protocol):
    """A framing that is a response body of its own (SSE, NDJSON): its media type, headers and
    what the body starts with. A WebSocket's messages have none of these."""

    media_type: str
    headers: dict[str, str]

    def preamble(self) -> bytes: ...
