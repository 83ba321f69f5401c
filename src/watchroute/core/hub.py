"""The hub: which watchers a committed change may concern, and waking them.

A watcher that has read everything in the window parks here under its collection. For a parked
watcher whose transport can take events on the spot (`Watcher.push`), a commit writes the events
it concerns straight to its socket: no task wakes up per event per watcher. Any other parked
watcher the commit concerns is woken once, however many changes the commit carried, and reads
all that is ready from the window itself. Watchers that are busy (reading, or writing to a slow
socket) are not parked and so cost a commit nothing.

Parked watchers are indexed so that a change is tested only against watchers it can concern:
a single-resource watcher under its id, a filtered watcher under one of its equality clauses
(`symbol=AAPL`), and only the rest against every change. 1000 watchers with 1000 different
equality filters then cost a commit a few dictionary look-ups, not 1000 filter evaluations.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from watchroute.core.change import Change
from watchroute.core.states import SYNCED, UNSYNCED

if TYPE_CHECKING:
    from watchroute.core.watcher import Watcher

# Index keys tell apart what the filter language tells apart: true is not 1, but 1 is 1.0.
_KINDS = {bool: "b", int: "n", float: "n", str: "s", type(None): "z"}


def _index_key(value: Any) -> tuple[str, Any] | None:
    kind = _KINDS.get(type(value))
    return None if kind is None else (kind, value)


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for segment in path:
        if not isinstance(data, dict) or segment not in data:
            return _MISSING
        data = data[segment]
    return data


_MISSING = object()


class SharedEvents(list[tuple[str, Change]]):
    """The events of one delivery that every unfiltered watcher of a collection gets.

    One object handed to all of them, with a cache of its frames per framing (`frames`, keyed by
    the framing's `shared_key`): each framing encodes and joins the events once per delivery,
    not once per watcher, and the cache goes with the delivery.
    """

    __slots__ = ("frames",)

    def __init__(self, events: list[tuple[str, Change]]) -> None:
        super().__init__(events)
        self.frames: dict[object, list[bytes]] = {}


class ParkedWatchers:
    """The parked watchers of one collection, indexed by what a change must have to concern them."""

    def __init__(self) -> None:
        self.everyone: set[Watcher] = set()
        self.by_id: defaultdict[str, set[Watcher]] = defaultdict(set)
        # path -> index key of the value -> watchers with the clause `path = value`
        self.by_field: defaultdict[tuple[str, ...], defaultdict[tuple[str, Any], set[Watcher]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self.size = 0

    @staticmethod
    def slot(watcher: Watcher) -> tuple[str, Any, Any]:
        if watcher.id is not None:
            return ("id", watcher.id, None)
        for path, value in getattr(watcher.filter, "equalities", ()):
            key = _index_key(value)
            if key is not None:
                return ("field", tuple(path.split(".")), key)
        return ("everyone", None, None)

    def _set_of(self, watcher: Watcher) -> set[Watcher]:
        kind, a, b = self.slot(watcher)
        if kind == "id":
            return self.by_id[a]
        if kind == "field":
            return self.by_field[a][b]
        return self.everyone

    def add(self, watcher: Watcher) -> None:
        members = self._set_of(watcher)
        if watcher not in members:
            members.add(watcher)
            self.size += 1

    def holds(self, watcher: Watcher) -> bool:
        kind, a, b = self.slot(watcher)
        if kind == "id":
            return watcher in self.by_id.get(a, ())
        if kind == "field":
            return watcher in self.by_field.get(a, {}).get(b, ())
        return watcher in self.everyone

    def discard(self, watcher: Watcher) -> bool:
        """Remove `watcher`; whether it was parked here."""
        kind, a, b = self.slot(watcher)
        if kind == "id":
            members = self.by_id.get(a)
        elif kind == "field":
            members = self.by_field.get(a, {}).get(b)
        else:
            members = self.everyone
        if members is not None and watcher in members:
            members.discard(watcher)
            self.size -= 1
            if not members and kind == "id":
                del self.by_id[a]
            elif not members and kind == "field":
                del self.by_field[a][b]
                if not self.by_field[a]:
                    del self.by_field[a]
            return True
        return False

    def candidates(self, changes: list[Change]) -> dict[Watcher, list[Change]]:
        """Every parked watcher that one of `changes` may concern (a superset, never less), with
        the changes, in order, that may concern it. A watcher of the whole collection gets
        `changes` itself."""
        found: dict[Watcher, list[Change]] = dict.fromkeys(self.everyone, changes)
        by_id, by_field = self.by_id, self.by_field
        for change in changes:
            if by_id:
                for watcher in by_id.get(change.id, ()):
                    found.setdefault(watcher, []).append(change)
            for path, by_value in by_field.items():
                # Before and after: a change that moves a resource out of a filter concerns it.
                # A watcher sits under one key only, so no watcher is reached twice here.
                after = _state_key(change.data, path)
                prev = change.prev
                before = after if prev is None else _state_key(prev, path)
                for key in (after,) if before == after else (after, before):
                    for watcher in by_value.get(key, ()) if key is not None else ():
                        found.setdefault(watcher, []).append(change)
        return found


def _state_key(state: Any, path: tuple[str, ...]) -> tuple[str, Any] | None:
    value = _lookup(state, path)
    return None if value is _MISSING else _index_key(value)


class Hub:
    """Matches committed changes to parked watchers.

    Under load, deliveries are gathered: a commit that comes soon after the last delivery
    waits, so that every watcher gets the changes of several commits in one socket write
    instead of one write per commit. It waits until as long after the last delivery as that
    delivery took (wall-clock time: how long the loop was kept from everything else), at least
    `coalesce` seconds and at most `GATHER_AT_MOST` after it, unless `coalesce` is longer. So
    while commits keep coming and deliveries take longer than `coalesce`, the server spends
    about as much time gathering as delivering, however fast the machine and however many the
    watchers. A fixed window shorter than a delivery gathered little once commits came a
    little further apart than that: most went out on their own, and delivering took the whole
    core (docs/watch.md, "Delivery under load", has the measurements).

    The first commit after a quiet spell goes out at once, and so do the gathered changes once
    there are `max_gathered` of them: a push then stays about as large as a write a watcher
    makes when it reads for itself (`max_events_per_write`), which bounds what a slow reader
    can pin in buffers. Waiting costs a timer and a wake-up of the process, which pays only
    when a delivery reaches many sockets: after one that reached fewer than `GATHER_FROM`
    watchers, the next commit goes out at once too.
    """

    GATHER_FROM = 64
    # However long the last delivery took, no commit waits longer than this (unless `coalesce`
    # asks for more): one slowed by a one-off pause (a collection pass, a swapped-out page)
    # must not hold the next commits as long.
    GATHER_AT_MOST = 0.05

    def __init__(self, coalesce: float = 0.0, max_gathered: int = 512) -> None:
        self._parked: dict[str, ParkedWatchers] = {}
        self.watchers: set[Watcher] = set()
        self.closing = False
        self.coalesce = coalesce
        self.max_gathered = max_gathered
        self._pending: list[Change] = []
        self._flush: asyncio.TimerHandle | None = None
        self._gather_until = -math.inf  # a commit before then waits for it
        self._reached = 0  # watchers the last delivery pushed to or woke
        # The last revision taken to the parked watchers; a watcher parks only once its cursor
        # has reached every published change, so what comes later is up to the hub to deliver.
        self.delivered = 0
        # For /metrics, added up once per delivery, not per watcher.
        self.pushes = 0
        self.wakeups = 0
        # Open watchers by transport, counted as they come and go (never per event).
        self.by_transport: defaultdict[str, int] = defaultdict(int)
        # What went out to watchers: added once per socket write (or long-poll answer) by
        # whoever wrote it, the write's events and bytes (transports/delivery.py).
        self.sent_events = 0
        self.sent_bytes = 0
        # Watches answered 410 Expired: asked to start before the horizon, fallen behind it
        # while watching, or whose initial state did not go out in time.
        self.expired = {"start": 0, "behind": 0, "initial": 0}
        # Streams ended because their client read nothing for two heartbeats (and two seconds).
        self.unresponsive = 0

    def add(self, watcher: Watcher) -> None:
        if watcher not in self.watchers:
            self.watchers.add(watcher)
            self.by_transport[watcher.transport] += 1

    def remove(self, watcher: Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)
            self.by_transport[watcher.transport] -= 1
        self.unpark(watcher)

    def park(self, watcher: Watcher) -> None:
        """A caught-up watcher waits here for the next commit that concerns it: SYNCED (a
        BLOCKED one stays BLOCKED: woken, never pushed to)."""
        parked = self._parked.get(watcher.collection)
        if parked is None:
            parked = self._parked[watcher.collection] = ParkedWatchers()
        parked.add(watcher)
        if watcher.state == UNSYNCED:
            watcher.state = SYNCED

    def is_parked(self, watcher: Watcher) -> bool:
        parked = self._parked.get(watcher.collection)
        return parked is not None and parked.holds(watcher)

    def unpark(self, watcher: Watcher) -> None:
        if watcher.state == SYNCED:
            watcher.state = UNSYNCED
        parked = self._parked.get(watcher.collection)
        if parked is None:
            return
        if parked.discard(watcher) and watcher.cursor < self.delivered:
            # Parked all along (the hub takes out a watcher it wakes): every change delivered
            # meanwhile was pushed to it or does not concern it. Moving its cursor past them
            # spares it reading them all again, which for 1000 watchers with different filters
            # would be the one-by-one matching that the index exists to avoid.
            watcher.cursor = self.delivered
        if not parked.size:
            del self._parked[watcher.collection]

    def parked_count(self) -> int:
        """Watchers parked now: caught up, waiting for the next commit."""
        return sum(parked.size for parked in self._parked.values())

    def lags(self, revision: int) -> list[int]:
        """How many revisions each open watcher is behind `revision`; for a scrape, never per
        event. A parked watcher has been given (or found not to concern it) everything the hub
        has delivered, whatever its cursor says."""
        parked: set[Watcher] = set()
        for watchers in self._parked.values():
            parked.update(watchers.everyone)
            for members in watchers.by_id.values():
                parked.update(members)
            for by_value in watchers.by_field.values():
                for members in by_value.values():
                    parked.update(members)
        delivered = self.delivered
        return [
            max(0, revision - (max(w.cursor, delivered) if w in parked else w.cursor)) for w in self.watchers
        ]

    def publish(self, changes: list[Change]) -> None:
        """Take a commit's changes (already in the window) to the parked watchers."""
        if not self._parked:
            # Nobody is parked; a watcher that parks later reads these from the window first.
            return
        if self.coalesce <= 0:
            self._deliver(changes)
            return
        self._pending += changes
        if len(self._pending) >= self.max_gathered:
            self._deliver_pending()
            return
        if self._flush is not None:
            return  # they go out with the gathered ones
        loop = asyncio.get_running_loop()
        if self._reached < self.GATHER_FROM or loop.time() >= self._gather_until:
            self._deliver_pending()
        else:
            self._flush = loop.call_at(self._gather_until, self._deliver_pending)

    def _deliver_pending(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        changes, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._deliver(changes)
        ended = loop.time()
        self._gather_until = ended + max(self.coalesce, min(ended - began, self.GATHER_AT_MOST))

    def _deliver(self, changes: list[Change]) -> None:
        by_collection: defaultdict[str, list[Change]] = defaultdict(list)
        for change in changes:
            if change.collection in self._parked:
                by_collection[change.collection].append(change)
        reached = 0
        for collection, relevant in by_collection.items():
            parked = self._parked[collection]
            # What every unfiltered watcher of the collection gets: one list, so that the
            # transports encode and frame it once for all of them.
            everything = SharedEvents([(c.type, c) for c in relevant])
            first = relevant[0].revision
            woken = []
            pushes = []
            for watcher, concerning in parked.candidates(relevant).items():
                events: list[tuple[str, Change]]
                if concerning is relevant and watcher.filter is None and watcher.cursor < first:
                    events = everything
                else:
                    # Past the cursor only: a watcher that started from a snapshot newer than
                    # this commit has its changes already.
                    events = [
                        (kind, c)
                        for c in concerning
                        if c.revision > watcher.cursor and (kind := watcher.classify(c)) is not None
                    ]
                if not events:
                    continue
                if watcher.push is not None:
                    # Its receiver, taken now: a push changes only its own watcher's (delivery.py).
                    pushes.append((watcher, watcher.push, events))
                else:
                    woken.append(watcher)
            # Every watcher's events first, the writes after. A socket write runs the kernel's
            # TCP path on this core, and matching done between writes seems to find the caches
            # full of the kernel's data: matching all first costs less CPU per delivery
            # (docs/benchmarks.md, *Measurements behind the code*).
            for watcher, push, events in pushes:
                # Synced: written from here, no task wake-up; they are the socket's now.
                watcher.cursor = events[-1][1].revision
                push(events)
            pushed = len(pushes)
            for watcher in woken:
                parked.discard(watcher)
                if watcher.state == SYNCED:
                    watcher.state = UNSYNCED  # its task reads for itself now
                watcher.wake()
            reached += pushed + len(woken)
            self.pushes += pushed
            self.wakeups += len(woken)
            if not parked.size:
                del self._parked[collection]
        if changes:
            self.delivered = changes[-1].revision
        self._reached = reached

    def wake_all(self) -> None:
        """Wake every parked watcher, cursors untouched, and deliver nothing more to them: each
        reads on from its own cursor (the tailer, when the window has lost revisions)."""
        if self._flush is not None:
            self._deliver_pending()
        self._parked = {}
        for watcher in self.watchers:
            if watcher.state == SYNCED:
                watcher.state = UNSYNCED
            watcher.wake()  # a watcher that is not waiting (busy reading) is not disturbed

    def close_all(self) -> None:
        """End every watch (server shutdown): each stream finishes cleanly, with the changes
        being gathered delivered first."""
        if self._flush is not None:
            self._deliver_pending()
        self.closing = True
        for watcher in list(self.watchers):
            watcher.close()
