"""A watcher is a cursor over the log, not a queue.

`cursor` is the revision up to which this watcher has considered every change: it has been sent
(or found not to concern it) everything <= cursor, and nothing after. The watcher owns no buffer:
when its socket is slow it simply stops asking for more, and when it asks again it reads from
the window, or from the log if the window has moved past it. A watcher whose cursor fell behind
the history horizon gets 410 Expired instead of a silent gap.

A watch with `initial=true` begins with a phase of its own: its watcher hands out the state at
its starting cursor a page at a time (initial.py), then reads changes as above.

A watcher with `conflate` set folds what it reads while behind to the newest state of each
resource (conflation.py); what the hub pushes to it once it has caught up is not folded.

A watcher's state, and which module may change it, is in states.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from watchroute.core.change import ADDED, DELETED, MODIFIED, Change
from watchroute.core.conflation import conflate
from watchroute.core.filter import Filter
from watchroute.core.hub import Hub
from watchroute.core.initial import InitialState
from watchroute.core.problems import Problem
from watchroute.core.states import BLOCKED, CLOSED, SYNCED, UNSYNCED
from watchroute.core.window import Window
from watchroute.store.base import LogSlice, Row, Store

# How many changes one pass looks at before letting other tasks run.
SCAN_BATCH = 4096

# Takes a commit's events from the hub and writes them to the socket.
Receiver = Callable[[list[tuple[str, Change]]], None]


class Watcher:
    __slots__ = (
        "_receiver",
        "_wake",
        "collection",
        "conflate",
        "cursor",
        "filter",
        "hub",
        "id",
        "initial",
        "push",
        "state",
        "store",
        "transport",
        "window",
    )

    def __init__(
        self,
        hub: Hub,
        window: Window,
        store: Store,
        collection: str,
        id: str | None,
        flt: Filter | None,
        cursor: int,
    ) -> None:
        self.hub = hub
        self.window = window
        self.store = store
        self.collection = collection
        self.id = id
        self.filter = flt
        self.cursor = cursor
        self.state = UNSYNCED
        self.conflate = False  # set by open_watch for `conflate=true`
        self.transport = "other"  # set by open_watch: what the hub counts it under
        # The state at `cursor` still to send, for `initial=true` (set by open_watch).
        self.initial: InitialState | None = None
        self._wake: asyncio.Future[None] | None = None
        # What the hub calls with a commit's events instead of waking this watcher while it is
        # parked. Invariant: None unless a transport gave a receiver and the watcher is neither
        # BLOCKED nor CLOSED; the hub reads only this, once per parked watcher and commit.
        self.push: Receiver | None = None
        self._receiver: Receiver | None = None

    def __enter__(self) -> Watcher:
        self.hub.add(self)
        if self.hub.closing:
            self.close()
        return self

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    # -- transitions ---------------------------------------------------------------------------

    def sync(self, receiver: Receiver) -> None:
        """The transport takes events straight from commits from now on (see `push`)."""
        self._receiver = receiver
        if self.state in (UNSYNCED, SYNCED):
            self.push = receiver

    def unsync(self) -> None:
        """The transport takes no more pushes: commits wake the watcher instead."""
        self._receiver = self.push = None

    def block(self) -> None:
        """A pushed write is pending on a socket that pushed back: push nothing until `unblock`;
        commits meanwhile wake the watcher, which reads them from the window after that write."""
        if self.state != CLOSED:
            self.state = BLOCKED
            self.push = None

    def unblock(self) -> None:
        """The pending write is out: pushes go on, if the transport still takes them."""
        if self.state == BLOCKED:
            self.state = SYNCED if self.hub.is_parked(self) else UNSYNCED
            self.push = self._receiver

    def withdraw(self) -> None:
        """Take nothing more from the hub (a revoked credential): no pushes, not parked. A task
        waiting in `next` sleeps on until woken or timed out."""
        self._receiver = self.push = None
        self.hub.unpark(self)

    def __exit__(self, *exc: object) -> None:
        self.hub.remove(self)
        self.end_initial()

    def end_initial(self) -> None:
        """Let the initial state's snapshot go, sent or not."""
        initial, self.initial = self.initial, None
        if initial is not None:
            initial.close()

    # -- what concerns this watcher ----------------------------------------------------------

    def classify(self, change: Change) -> str | None:
        """The event type this watcher sees for `change`, or None when it is not concerned.

        With a filter, membership decides: a change that makes a resource match arrives as
        ADDED, one that makes it stop matching as DELETED (carrying the new state).
        """
        if change.collection != self.collection or (self.id is not None and change.id != self.id):
            return None
        flt = self.filter
        if flt is None:
            return change.type
        prev = change.prev
        before = prev is not None and flt.matches(prev)
        after = change.type != DELETED and flt.matches(change.data)
        if after:
            return MODIFIED if before else ADDED
        return DELETED if before else None

    # -- reading -----------------------------------------------------------------------------

    async def initial_page(self) -> list[Row]:
        """The next page of the initial state; [] once it has all been read (or there is none).
        Raises Problem(410) when it took too long to go out (initial.py)."""
        initial = self.initial
        if initial is None:
            return []
        try:
            rows = await initial.page()
        except Problem as problem:
            if problem.status == 410:
                self.hub.expired["initial"] += 1
            raise
        if not rows:
            self.initial = None
        return rows

    def wake(self) -> None:
        if self._wake is not None:
            _set_if_pending(self._wake)

    def close(self) -> None:
        self.state = CLOSED
        self.push = None
        self.wake()

    async def next(self, limit: int, timeout: float) -> list[tuple[str, Change]]:
        """The next events for this watcher (at most `limit`), waiting up to `timeout` seconds
        for one; [] on timeout or when closed. Raises Problem(410) past the horizon."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed:
            events = await self._read(limit)
            if events:
                return events
            if self.cursor < self.window.revision:
                await asyncio.sleep(0)  # a long run of changes that concern others: stay fair
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            # Caught up. Nothing can commit between the read above and parking (no await), so
            # no wake-up is missed.
            wake = self._wake = loop.create_future()
            timer = loop.call_later(remaining, _set_if_pending, wake)
            self.hub.park(self)
            try:
                await wake
            finally:
                timer.cancel()
                self._wake = None
                self.hub.unpark(self)
        return []

    async def _read(self, limit: int) -> list[tuple[str, Change]]:
        if self.conflate:
            return await self._read_conflated(limit)
        changes = self.window.after(self.cursor, SCAN_BATCH)
        events: list[tuple[str, Change]]
        if changes is None:
            # Behind the window: read the log up to where the window starts.
            piece = await self._read_log(limit)
            events = [(t, c) for c in piece.changes if (t := self.classify(c)) is not None]
            self.cursor = max(self.cursor, piece.scanned_to)
            return events
        events = []
        for change in changes:
            kind = self.classify(change)
            if kind is not None:
                events.append((kind, change))
                if len(events) == limit:
                    self.cursor = change.revision
                    return events
        if changes:
            self.cursor = changes[-1].revision
        return events

    async def _read_log(self, limit: int) -> LogSlice:
        """Behind the window: the log up to where the window starts. Raises Problem(410) when
        the cursor has fallen behind the history horizon."""
        try:
            return await self.store.read_log(
                self.cursor, self.window.first_revision - 1, self.collection, self.id, limit
            )
        except Problem as problem:
            if problem.status == 410:
                self.hub.expired["behind"] += 1
            raise

    async def _read_conflated(self, limit: int) -> list[tuple[str, Change]]:
        """Like _read, but the changes of one resource within what is read fold into one event;
        read as much as one pass may (not `limit` changes), so that more of them fold."""
        changes = self.window.after(self.cursor, SCAN_BATCH)
        events: list[tuple[str, Change]]
        if changes is None:
            piece = await self._read_log(max(limit, SCAN_BATCH))
            changes, scanned_to = piece.changes, piece.scanned_to
        else:
            scanned_to = changes[-1].revision if changes else self.cursor
        events, cut = conflate(self.classify, changes, limit)
        # Cut at the last event sent: the resources folded past it are read again from there,
        # which is what a client resuming from that event would get (conflation.py).
        self.cursor = max(self.cursor, scanned_to if cut is None else cut)
        return events


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
