"""Watch events as JSON: the templates every framing wraps.

A change's encodings are made the first time a watcher needs them and then shared by every
watcher (`Change.frames`): an event is encoded once, not once per watcher. A filtered watcher may
see a change under another kind (a MODIFIED that leaves its filter arrives as DELETED), so
encodings are cached per kind as well.

A `format=patch` watch asks for a framing with the PATCHES flag: its MODIFIED events carry the
RFC 7386 merge patch from the previous state, `{"type": "MODIFIED", "revision": N, "id": ...,
"patch": {...}}`, made once per change like the rest. Every other event, and a MODIFIED whose
patch cannot be written or would not be shorter than the object, is the same as in full format
(the same cached bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from watchroute.core.change import DELETED, MODIFIED, RESTATED, WITHDRAWN, Change
from watchroute.wire.mergepatch import merge_diff

# A resource and a change event as orjson writes them, put together from bytes: this runs for
# every change a watcher sees and every resource a response holds, and a dict handed to orjson
# costs about twice as much (then a copy to the exact size).
_RESOURCE = b'{"id":%s,"revision":%d,"created_revision":%d,"data":%s}'
_EVENT = b'{"type":"%s","revision":%d,"object":' + _RESOURCE + b"}"
# A leased resource (one written with a ttl) shows when it expires; the DELETED its lapse made
# says so with `"expired":true` (leases.py).
_LEASED = b'{"id":%s,"revision":%d,"created_revision":%d,"expires_at":"%s","data":%s}'

# Event types that are the wire's own: no change has them.
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"

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


def framed(change: Change, kind: str, framing: int) -> bytes:
    """`change` as an event of `kind`, in `framing` (JSON, SSE or NDJSON, each optionally with
    PATCHES); made once per change, kind and framing."""
    key = (kind, framing)
    frame = change.frames.get(key)
    if frame is None:
        if framing & PATCHES:
            frame = _patch_framed(change, kind, framing & ~PATCHES)
        elif kind == RESTATED:  # a MODIFIED on the wire, always whole (conflation.py)
            frame = framed(change, MODIFIED, framing)
        elif framing == JSON:
            frame = _event_json(change, kind)
        else:
            frame = FRAMERS[framing](framed(change, kind, JSON), change.revision)
        change.frames[key] = frame
    return frame


def event_json(change: Change, kind: str) -> bytes:
    return framed(change, kind, JSON)


def _event_json(change: Change, kind: str) -> bytes:
    """`{"type": ..., "revision": ..., "object": <the resource>}`; a withdrawn change is a
    DELETED that shows the state before it (security/guarded.py)."""
    data_json = change.data_json
    if kind == WITHDRAWN:
        kind, data_json = DELETED, change.prev_json or data_json
    if change.expires_at is not None:
        expired = b',"expired":true' if kind == DELETED and change.type == DELETED else b""
        return b'{"type":"%s","revision":%d%s,"object":%s}' % (
            kind.encode(),
            change.revision,
            expired,
            resource_json(change.id, change.revision, change.created_revision, data_json, change.expires_at),
        )
    return _EVENT % (
        kind.encode(),
        change.revision,
        orjson.dumps(change.id),
        change.revision,
        change.created_revision,
        data_json,
    )


def _patch_framed(change: Change, kind: str, framing: int) -> bytes:
    if kind != MODIFIED:
        return framed(change, kind, framing)
    if framing != JSON:
        return FRAMERS[framing](framed(change, MODIFIED, JSON | PATCHES), change.revision)
    patch = _merge_patch(change)
    if patch is None:
        return framed(change, MODIFIED, JSON)
    return b'{"type":"MODIFIED","revision":%d,"id":%s,"patch":%s}' % (
        change.revision,
        orjson.dumps(change.id),
        patch,
    )


def _merge_patch(change: Change) -> bytes | None:
    """The merge patch from the previous state as JSON; None when the whole object is as
    good (no previous state, a null no merge patch can write, or not shorter)."""
    prev = change.prev
    if prev is None or change.type != MODIFIED:
        return None
    try:
        patch = merge_diff(prev, change.data)
    except RecursionError:  # nested deeper than the diff can recurse: send it whole
        return None
    if patch is None:
        return None
    patch_json = orjson.dumps(patch)
    return patch_json if len(patch_json) < len(change.data_json) else None


def bookmark_json(revision: int, initial_events_end: bool = False) -> bytes:
    event: dict[str, Any] = {"type": BOOKMARK, "revision": revision}
    if initial_events_end:
        event["initial_events_end"] = True
    return orjson.dumps(event)


def error_json(problem: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": ERROR, "error": problem})


class StoredResource(Protocol):
    """A resource as a store reads it (store.base.Row)."""

    @property
    def id(self) -> str: ...
    @property
    def revision(self) -> int: ...
    @property
    def created_revision(self) -> int: ...
    @property
    def data_json(self) -> bytes: ...
    @property
    def expires_at(self) -> float | None: ...


def initial_event_json(row: StoredResource) -> bytes:
    """An ADDED event of a watch's initial state (`initial=true`)."""
    return b'{"type":"ADDED","revision":%d,"object":%s}' % (
        row.revision,
        resource_json(row.id, row.revision, row.created_revision, row.data_json, row.expires_at),
    )


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
