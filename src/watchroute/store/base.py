"""The store seam: one transaction writes the new state and appends the change to the log.

Invariants every engine keeps:
- one global revision, taken by every committed change, gap-free and increasing in commit order;
- a job (one request, or one `_batch`) commits whole or not at all, on consecutive revisions;
- `on_commit` is called with each committed job's changes in revision order, before the writer
  hears back, so that a revision a client has been told about is already known to this instance.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from watchroute.core.change import Change
from watchroute.core.filter import Filter
from watchroute.core.problems import Problem
from watchroute.store.figures import WriteFigures

CommitListener = Callable[[list[Change]], None]
# Told that the revisions up to the one given were compacted before this instance could read
# them (it shares the store and fell behind the history horizon): the tailer's `lost`.
LostListener = Callable[[int], None]
# A named position kept with the log, e.g. ("bridge:orders-in", "1234") or ("capture", LSN):
# how far a follower of something outside the store has got. Stored in the same transaction as
# the ops it came with, so that a restart neither loses nor repeats what it applied.
Position = tuple[str, str]


@dataclass(slots=True)
class WriteOp:
    kind: str  # "create" | "put" | "patch" | "delete"
    collection: str
    id: str
    # None for a delete or a patch, and for a put or create whose `data_json` is set and that
    # no guard or check reads (a batch lets its parsed documents go once they are encoded).
    data: dict[str, Any] | None = None
    # `data` encoded by whoever had it at hand (and in cache); None: the store encodes it.
    data_json: bytes | None = None
    # Applied to the current state (a Row or a Change) inside the transaction, with the largest
    # document a write may leave; raises Problem to refuse (wire.patches.Patch).
    patch: Callable[[Any, int], Any] | None = None
    if_match: int | None = None
    must_exist: bool = False  # If-Match: *
    must_not_exist: bool = False  # If-None-Match: *, and every create
    # Checked inside the transaction on the states before and after (security.WriteGuard).
    guard: WriteGuard | None = None
    # Run inside the transaction with the op and the state a create, put or patch leaves (None
    # when a batch let its parsed document go: then in `data_json`); raises Problem to refuse.
    # It answers for the collection's schema (schemas.py).
    check: Callable[[WriteOp, dict[str, Any] | None], None] | None = None
    # A create, put or patch with a ttl leaves a lease that lapses `ttl` seconds after it
    # commits; without one it leaves the resource permanent (leases.py).
    ttl: float | None = None
    # The sweep's delete of a lapsed lease: only while the resource still expires at exactly
    # this time (a renewal, or another sweeper, got there first otherwise: the op is refused).
    lapsed_at: float | None = None
    # A patch of a resource that does not exist applies to an empty object and creates it,
    # instead of 404: a bridge's merge of a message whose resource comes into being with it.
    create_missing: bool = False


class WriteGuard(Protocol):
    def current(self, data: dict[str, Any]) -> bool: ...  # False: hidden, to be taken as absent
    def new(self, data: dict[str, Any]) -> None: ...  # raises Problem: may not leave it so
    def violation(self) -> Problem: ...  # the refusal `new` raises


@dataclass(slots=True)
class Row:
    """A resource as stored: its data stays encoded until someone needs it parsed."""

    collection: str
    id: str
    revision: int
    created_revision: int
    data_json: bytes
    expires_at: float | None = None  # a lease's expiry, seconds since the epoch
    _data: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            import orjson

            self._data = orjson.loads(self.data_json)
        return self._data


@dataclass(slots=True)
class Page:
    rows: list[Row]
    revision: int  # the store revision the page was read at
    next_after_id: str | None  # the id to continue after, None on the last page


@dataclass(slots=True)
class LogSlice:
    changes: list[Change]
    scanned_to: int  # every change <= scanned_to was looked at (returned or not matching)


class Snapshot(Protocol):
    """One collection (or one resource) as it was at `revision`, read a page at a time: every
    page shows the state at that one revision, whatever commits meanwhile."""

    revision: int

    async def page(self, flt: Filter | None, max_rows: int, max_bytes: int) -> list[Row]:
        """The next matching rows in id order: at most `max_rows`, and past `max_bytes` of
        data by no more than the row that crosses it; [] once every row has been read."""
        ...

    def close(self) -> None:
        """Let the snapshot go (also while a page is being read); idempotent."""
        ...


class Store(Protocol):
    revision: int  # the latest revision this instance has seen committed
    compacted: int  # changes <= compacted are gone from the log
    figures: WriteFigures  # the writer's latency and group sizes, for /metrics

    async def open(self, on_commit: CommitListener, on_lost: LostListener | None = None) -> None: ...
    async def close(self) -> None: ...
    # `position`: stored with the ops, in their transaction, only if the job commits (ops may
    # be empty: the position alone). Jobs committed together store each name's last value.
    async def write(self, ops: list[WriteOp], position: Position | None = None) -> list[Change]: ...
    async def position(self, name: str) -> str | None: ...  # the last committed value, or None
    async def get(self, collection: str, id: str) -> Row | None: ...
    async def list(
        self,
        collection: str,
        flt: Filter | None,
        limit: int,
        after_id: str | None,
        id: str | None = None,
    ) -> Page: ...
    async def snapshot(self, collection: str, id: str | None = None) -> Snapshot: ...
    async def read_log(
        self, after: int, upto: int, collection: str, id: str | None, limit: int
    ) -> LogSlice: ...
    async def committed_revision(self) -> int: ...
    # Why writes are refused now (the database file gone, the last write failed on the disk):
    # None when they can commit. May try a write that takes no revision to find out.
    async def unavailable(self) -> str | None: ...
    async def compact(self, keep_events: int, keep_seconds: float) -> int: ...
    async def collections(self) -> builtins.list[dict[str, Any]]: ...
    # The leases lapsed by `now`, soonest first, at most `limit`: (collection, id, expires_at).
    # An indexed range read: its cost does not grow with the number of live leases.
    async def lapsed(self, now: float, limit: int) -> builtins.list[tuple[str, str, float]]: ...
    # Whether this instance is the one to sweep lapsed leases now (the others skip the pass).
    def sweep_turn(self) -> contextlib.AbstractAsyncContextManager[bool]: ...


@dataclass(frozen=True, slots=True)
class StoredKey:
    """An API key's record as the store keeps it: the key itself never, only its digest."""

    id: str
    digest: bytes
    subject: str
    scopes: tuple[str, ...]
    name: str
    created: float
    expires: float | None
    revoked: float | None

    @classmethod
    def from_row(cls, row: Any) -> StoredKey:
        """From API_KEY_COLUMNS as both engines store them (scopes as a JSON array)."""
        import orjson

        scopes = tuple(orjson.loads(row[3]))
        return cls(row[0], bytes(row[1]), row[2], scopes, row[4], row[5], row[6], row[7])

    def row(self) -> tuple[Any, ...]:
        """In API_KEY_COLUMNS' order, as both engines store it (`from_row` reads it back)."""
        import orjson

        scopes = orjson.dumps(list(self.scopes)).decode()
        return (
            self.id,
            self.digest,
            self.subject,
            scopes,
            self.name,
            self.created,
            self.expires,
            self.revoked,
        )


API_KEY_COLUMNS = "id, digest, subject, scopes, name, created, expires, revoked"


class APIKeyTable(Protocol):
    """Where API keys live: beside the data, in the same database (security/apikeys.py says
    what a key is). Each call is its own short transaction, so the CLI can manage keys while
    servers run; calls block, and the server makes them off its event loop."""

    def insert(self, key: StoredKey) -> None: ...
    def revoke(self, id: str, at: float) -> bool: ...  # False: unknown, or revoked already
    def all(self) -> list[StoredKey]: ...  # oldest first
    def get(self, id: str) -> StoredKey | None: ...
    # Those of `ids` still standing at `now`: not revoked, not expired, not deleted.
    def standing(self, ids: list[str], now: float) -> set[str]: ...
