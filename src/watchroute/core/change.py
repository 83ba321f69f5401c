"""Committed changes and their wire forms.

A `Change` is one row of the log. Its encodings (event JSON, SSE frame, NDJSON line) are made the
first time a watcher needs them and then shared by every watcher: an event is encoded once,
not once per watcher. A filtered watcher may see a change under another type (a MODIFIED that
leaves its filter arrives as DELETED), so encodings are cached per type as well.

A `format=patch` watch asks for a framing with the PATCHES flag: its MODIFIED events carry the
RFC 7386 merge patch from the previous state, `{"type": "MODIFIED", "revision": N, "id": ...,
"patch": {...}}`, made once per change like the rest. Every other event, and a MODIFIED whose
patch cannot be written or would not be shorter than the object, is the same as in full format
(the same cached bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from watchroute.patches import merge_diff

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
# Never on the wire: a DELETED for a watcher whose rule hides the change's new state. It carries
# the state before the change (the last one that watcher could see) instead (security/guarded.py).
WITHDRAWN = "WITHDRAWN"
# Never on the wire: a MODIFIED that carries the whole object even in a `format=patch` watch,
# because the client may not hold the state before it (a conflated catch-up, conflation.py).
RESTATED = "RESTATED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


def encode(value: Any) -> bytes:
    """JSON for bytes that stay in memory (the window, the log's rows).

    orjson hands back its bytes inside a 4 KiB allocation; a copy of the exact size keeps a
    window of 10,000 events at a few MiB instead of tens.
    """
    return bytes(memoryview(orjson.dumps(value)))


# A resource and a change event as orjson writes them, put together from bytes: this runs for
# every change a watcher sees and every resource a response holds, and a dict handed to orjson
# costs about twice as much (then a copy to the exact size).
_RESOURCE = b'{"id":%s,"revision":%d,"created_revision":%d,"data":%s}'
_EVENT = b'{"type":"%s","revision":%d,"object":' + _RESOURCE + b"}"
# A leased resource (one written with a ttl) shows when it expires; the DELETED its lapse made
# says so with `"expired":true` (leases.py).
_LEASED = b'{"id":%s,"revision":%d,"created_revision":%d,"expires_at":"%s","data":%s}'


class Change:
    """One committed change: `data` is the state after it (the last state for a DELETED),
    `prev` the state before it (None for an ADDED)."""

    __slots__ = (
        "_data",
        "_data_json",
        "_encoded",
        "_prev",
        "_prev_json",
        "collection",
        "created_revision",
        "expires_at",
        "id",
        "revision",
        "ts",
        "type",
    )

    def __init__(
        self,
        revision: int,
        type: str,
        collection: str,
        id: str,
        created_revision: int,
        data_json: bytes,
        prev_json: bytes | None,
        ts: float,
        data: dict[str, Any] | None = None,
        prev: dict[str, Any] | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.revision = revision
        self.type = type
        self.collection = collection
        self.id = id
        self.created_revision = created_revision
        self.ts = ts
        self._data_json = data_json
        self._prev_json = prev_json
        self._data = data
        self._prev = prev
        # When the lease the change leaves lapses (seconds since the epoch; None: permanent).
        # On a DELETED, set only when the lease's lapse made it: the event says `expired`.
        self.expires_at = expires_at
        self._encoded: dict[tuple[str, int], bytes] = {}

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = orjson.loads(self._data_json)
        return self._data

    @property
    def prev(self) -> dict[str, Any] | None:
        if self._prev is None and self._prev_json is not None:
            self._prev = orjson.loads(self._prev_json)
        return self._prev

    @property
    def data_json(self) -> bytes:
        return self._data_json

    @property
    def prev_json(self) -> bytes | None:
        return self._prev_json

    def event_json(self, type: str) -> bytes:
        return self.framed(type, JSON)

    def framed(self, type: str, framing: int) -> bytes:
        """This change as event `type`, in `framing` (JSON, SSE or NDJSON, each optionally with
        PATCHES); made once."""
        key = (type, framing)
        frame = self._encoded.get(key)
        if frame is None:
            if framing & PATCHES:
                frame = self._patch_framed(type, framing & ~PATCHES)
            elif type == RESTATED:
                frame = self.framed(MODIFIED, framing)
            elif framing == JSON:
                frame = self._event_json(type)
            else:
                frame = FRAMERS[framing](self.framed(type, JSON), self.revision)
            self._encoded[key] = frame
        return frame

    def _event_json(self, type: str) -> bytes:
        """`{"type": ..., "revision": ..., "object": <the resource>}`; a withdrawn change shows
        the state before it."""
        data_json = self._data_json
        if type == WITHDRAWN:
            type, data_json = DELETED, self._prev_json or data_json
        if self.expires_at is not None:
            expired = b',"expired":true' if type == DELETED and self.type == DELETED else b""
            return b'{"type":"%s","revision":%d%s,"object":%s}' % (
                type.encode(),
                self.revision,
                expired,
                resource_json(self.id, self.revision, self.created_revision, data_json, self.expires_at),
            )
        return _EVENT % (
            type.encode(),
            self.revision,
            orjson.dumps(self.id),
            self.revision,
            self.created_revision,
            data_json,
        )

    def _patch_framed(self, type: str, framing: int) -> bytes:
        if type != MODIFIED:
            return self.framed(type, framing)
        if framing != JSON:
            return FRAMERS[framing](self.framed(MODIFIED, JSON | PATCHES), self.revision)
        patch = self._merge_patch()
        if patch is None:
            return self.framed(MODIFIED, JSON)
        return b'{"type":"MODIFIED","revision":%d,"id":%s,"patch":%s}' % (
            self.revision,
            orjson.dumps(self.id),
            patch,
        )

    def _merge_patch(self) -> bytes | None:
        """The merge patch from the previous state as JSON; None when the whole object is as
        good (no previous state, a null no merge patch can write, or not shorter)."""
        prev = self.prev
        if prev is None or self.type != MODIFIED:
            return None
        try:
            patch = merge_diff(prev, self.data)
        except RecursionError:  # nested deeper than the diff can recurse: send it whole
            return None
        if patch is None:
            return None
        patch_json = orjson.dumps(patch)
        return patch_json if len(patch_json) < len(self._data_json) else None


# Framings a transport asks a change for; each is cached on the change beside the plain JSON.
JSON = 0
SSE = 1
NDJSON = 2
# A flag on a framing: MODIFIED events as merge patches (format=patch).
PATCHES = 4


def sse_frame(event_json: bytes, id: int | None) -> bytes:
    if id is None:
        return b"data: " + event_json + b"\n\n"
    return b"id: %d\ndata: %s\n\n" % (id, event_json)


def ndjson_line(event_json: bytes, _id: int | None = None) -> bytes:
    return event_json + b"\n"


FRAMERS: dict[int, Callable[[bytes, int | None], bytes]] = {SSE: sse_frame, NDJSON: ndjson_line}


def bookmark_json(revision: int, initial_events_end: bool = False) -> bytes:
    event: dict[str, Any] = {"type": BOOKMARK, "revision": revision}
    if initial_events_end:
        event["initial_events_end"] = True
    return orjson.dumps(event)


def error_json(problem: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": ERROR, "error": problem})


def resource_json(
    id: str, revision: int, created_revision: int, data_json: bytes, expires_at: float | None = None
) -> bytes:
    if expires_at is not None:
        return _LEASED % (orjson.dumps(id), revision, created_revision, expiry_text(expires_at), data_json)
    return _RESOURCE % (orjson.dumps(id), revision, created_revision, data_json)


def expiry_text(expires_at: float) -> bytes:
    """A lease's expiry as RFC 3339 in UTC, to the millisecond: 2026-01-02T03:04:05.678Z."""
    moment = datetime.fromtimestamp(expires_at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.").encode() + b"%03dZ" % (moment.microsecond // 1000)
