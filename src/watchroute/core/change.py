"""Committed changes: one row of the log, as the data path holds it.

A `Change` keeps its state after and before as the JSON the log stores, decoded only when a
filter or a diff reads them, and a cache of its encodings (`frames`) that the wire fills once
per kind and framing (watchroute.wire.events) and every watcher shares.
"""

from __future__ import annotations

from typing import Any

import orjson

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
# The kinds a watcher sees a change as: its own type, DELETED for a MODIFIED that leaves the
# watcher's filter (ADDED for one that enters it), and the two below, which the wire writes as
# DELETED and MODIFIED (watchroute.wire.events).
# Never on the wire: a DELETED for a watcher whose rule hides the change's new state. It carries
# the state before the change (the last one that watcher could see) instead (security/guarded.py).
WITHDRAWN = "WITHDRAWN"
# Never on the wire: a MODIFIED that carries the whole object even in a `format=patch` watch,
# because the client may not hold the state before it (a conflated catch-up, conflation.py).
RESTATED = "RESTATED"


def encode(value: Any) -> bytes:
    """JSON for bytes that stay in memory (the window, the log's rows).

    orjson hands back its bytes inside an allocation of at least a page; a copy of the exact
    size keeps a full window an order of magnitude smaller.
    """
    return bytes(memoryview(orjson.dumps(value)))


class Change:
    """One committed change: `data` is the state after it (the last state for a DELETED),
    `prev` the state before it (None for an ADDED)."""

    __slots__ = (
        "_data",
        "_data_json",
        "_prev",
        "_prev_json",
        "collection",
        "created_revision",
        "expires_at",
        "frames",
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
        # (kind, framing) -> the change's event in that framing, made once by the wire.
        self.frames: dict[tuple[str, int], bytes] = {}

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
