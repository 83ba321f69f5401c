"""WebSocket framing: one event JSON per text message; on `/v1/_watch` each carries its `"sub"`."""

from __future__ import annotations

import orjson

from watchroute.core.change import Change
from watchroute.wire.events import JSON, PATCHES, framed


def sub_prefix(sub: str) -> bytes:
    """The start of every message of subscription `sub` on `/v1/_watch`: `{"sub":"s1",`."""
    return b'{"sub":' + orjson.dumps(sub) + b","


def tagged(prefix: bytes, event_json: bytes) -> bytes:
    """The event JSON with `"sub": ...` first (prefix is `{"sub":"s1",`), or unchanged."""
    return event_json if prefix == b"{" else prefix + event_json[1:]


class WSFraming:
    shared_key: object = None  # one message per event: nothing to join with other watches

    def __init__(self, prefix: bytes, patches: bool = False) -> None:
        self.prefix = prefix
        self.flags = JSON | PATCHES if patches else JSON  # format=patch

    def change(self, kind: str, change: Change) -> bytes:
        return tagged(self.prefix, framed(change, kind, self.flags))

    def initial(self, event_json: bytes) -> bytes:
        return tagged(self.prefix, event_json)

    def bookmark(self, event_json: bytes, revision: int) -> bytes:
        return tagged(self.prefix, event_json)

    def error(self, event_json: bytes) -> bytes:
        return tagged(self.prefix, event_json)
