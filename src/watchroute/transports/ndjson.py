"""NDJSON framing (Kubernetes style): one event JSON per line."""

from __future__ import annotations

from ..events import NDJSON, Change


class NDJSONFraming:
    media_type = "application/x-ndjson"
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

    def preamble(self) -> bytes:
        return b""

    def change(self, kind: str, change: Change) -> bytes:
        return change.framed(kind, NDJSON)

    def initial(self, event_json: bytes) -> bytes:
        return event_json + b"\n"

    def bookmark(self, event_json: bytes, revision: int) -> bytes:
        return event_json + b"\n"

    def error(self, event_json: bytes) -> bytes:
        return event_json + b"\n"
