"""Opening a watch: where it starts, what it refuses, and the initial state it sends first.

Every transport opens its watches here, so that `since`, `initial`, 410 and FutureRevision mean
the same thing in SSE, NDJSON, long-poll and WebSocket. What it reads is handed to it as a
`WatchSources` (the store, the data path's parts, and a callable that admits a watch), not the
whole server: opening a watch needs neither the web nor the security package loaded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from watchroute.core.filter import Filter
from watchroute.core.hub import Hub
from watchroute.core.initial import InitialState, InitialStates
from watchroute.core.problems import bad_request, catching_up, expired, future_revision
from watchroute.core.tailer import Tailer
from watchroute.core.watcher import Watcher
from watchroute.core.window import Window
from watchroute.store import Store
from watchroute.store.base import Snapshot
from watchroute.watch.params import FORMATS, PATCH_FORMAT

# How long a watch waits for this instance to see a revision that the store has committed (a
# list's revision read a moment before the commit reached the tailer, or a revision another
# instance on the same database told the client of), as Kubernetes' watch cache does.
CATCH_UP_SECONDS = 3.0


def check_format(value: object) -> str:
    """The `format` of a watch; 400 BadParameter for anything but the names in FORMATS."""
    if value is None:
        return "full"
    if value not in FORMATS:
        raise bad_request("BadParameter", f"format must be full or patch, not {value!r:.40}")
    return value


class Admission(Protocol):
    """A watch let in by the caller's grant and caps: the rule it reads through, and the
    watcher that carries the credential's expiry and the cap's slot (security/policy.py)."""

    @property
    def expires_at(self) -> float | None: ...

    def restrict(self, flt: Filter | None) -> Filter | None: ...

    def watcher(
        self,
        hub: Hub,
        window: Window,
        store: Store,
        collection: str,
        id: str | None,
        flt: Filter | None,
        cursor: int,
    ) -> Watcher: ...

    def release(self) -> None: ...


@dataclass(slots=True)
class InitialPaging:
    """How `initial=true` hands out the state: events per write, bytes per page, and how long
    a read snapshot may stay open."""

    max_events: int
    page_bytes: int
    snapshot_seconds: float


@dataclass(slots=True)
class WatchSources:
    """What opening a watch reads from."""

    store: Store
    tailer: Tailer
    window: Window
    hub: Hub
    initial_states: InitialStates
    paging: InitialPaging
    # (identity, collection) -> Admission; raises Problem (401, 403, 429) for a refused watch.
    admit: Callable[[Any, str], Awaitable[Admission]]
    # The revision a captured collection's current copy began after, None for any other.
    capture_epoch: Callable[[str], int | None] = lambda collection: None


@dataclass(slots=True)
class WatchSpec:
    collection: str
    id: str | None = None
    since: int | None = None
    filter: Filter | None = None
    initial: bool = False
    # "full", or "patch": MODIFIED events as merge patches from the previous state (wire/events.py).
    format: str = "full"
    # Fold what a watcher reads while behind to the newest state per resource (conflation.py).
    conflate: bool = False
    # Who asks (security.Identity, from the request's scope): its grant, rule and limits apply.
    identity: Any = None
    # How the events go out (sse, ndjson, longpoll, websocket): counted by the hub, for /metrics.
    transport: str = "other"


@dataclass(slots=True)
class OpenedWatch:
    watcher: Watcher  # for initial=true, its `initial` holds the state to send first
    initial_revision: int  # where the watch starts: for initial=true, the state's revision
    # When the caller's credential expires (Unix time): the watcher then raises 401 TokenExpired.
    expires_at: float | None = None
    # format=patch: the framings add PATCHES (wire/events.py).
    patches: bool = False


async def open_watch(sources: WatchSources, spec: WatchSpec) -> OpenedWatch:
    """Check a watch request and place its cursor; raises Problem before any streaming."""
    store, tailer = sources.store, sources.tailer
    patches = check_format(spec.format) == PATCH_FORMAT
    # Grant, rate and caps first: a refused watch costs no read. The rule narrows the filter,
    # so the initial state, live events and membership all see only what the caller may see.
    admission = await sources.admit(spec.identity, spec.collection)
    places: InitialStates | None = None
    snapshot: Snapshot | None = None
    try:
        flt = admission.restrict(spec.filter)
        if spec.initial:
            if spec.since is not None:
                raise bad_request("BadParameter", "initial=true cannot be combined with since")
            await sources.initial_states.take()
            places = sources.initial_states
            # Read a page at a time as the connection takes them, all at this one revision.
            snapshot = await store.snapshot(spec.collection, spec.id)
            cursor = snapshot.revision
        elif spec.since is None:
            cursor = tailer.revision
        else:
            cursor = spec.since
            if cursor < store.compacted:
                sources.hub.expired["start"] += 1
                raise expired(cursor, store.compacted)
            epoch = sources.capture_epoch(spec.collection)
            if epoch is not None and cursor < epoch:
                raise expired(cursor, epoch)  # a new copy of a captured table since then
        if cursor > tailer.revision:
            latest = await store.committed_revision()
            if cursor > latest:
                raise future_revision(cursor, latest)
            # Committed, but not yet read by this instance (another told the client of it): a
            # short wait, then 503 rather than a watch that would start ahead of this one.
            if not await tailer.wait_for(cursor, CATCH_UP_SECONDS):
                raise catching_up(cursor, tailer.revision)
        watcher: Watcher = admission.watcher(
            sources.hub, sources.window, store, spec.collection, spec.id, flt, cursor
        )
    except BaseException:
        admission.release()
        if snapshot is not None:
            snapshot.close()
        if places is not None:
            places.give_back()
        raise
    watcher.conflate = spec.conflate
    watcher.transport = spec.transport
    if snapshot is not None:
        p = sources.paging
        watcher.initial = InitialState(snapshot, places, flt, p.max_events, p.page_bytes, p.snapshot_seconds)
    return OpenedWatch(watcher, cursor, admission.expires_at, patches)
