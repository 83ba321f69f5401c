"""NDJSON framing (Kubernetes style): one event JSON per line."""

from __future__ import annotations

from watchroute.core.change import Change
from watchroute.wire.events import NDJSON, PATCHES, framed


class NDJSONFraming:
    media_type = "application/x-ndjson"
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    shared_key: object = "ndjson"

    def __init__(self, patches: bool = False) -> None:
        self.flags = NDJSON | PATCHES if patches else NDJSON  # format=patch
        if patches:
            # Patch frames differ from full ones: share them only among patch watches.
            self.shared_key = "ndjson+patch"

    def preamble(self) -> bytes:
        return b""

    def change(self, kind: str, change: Change) -> bytes:
        return framed(change, kind, self.flags)

    def initial(self, event_json: bytes) -> bytes:
        return event_json + b"\n"

    def bookmark(self, event_json: bytes, revision: int) -> bytes:
        return event_json + b"\n"

    def error(self, event_json: bytes) -> bytes:
        return event_json + b"\n"
