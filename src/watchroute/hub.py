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

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from .events import Change

if TYPE_CHECKING:
    from .watcher import Watcher

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

    def discard(self, watcher: Watcher) -> None:
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

    def candidates(self, changes: list[Change]) -> list[Watcher]:
        """Every parked watcher that one of `changes` may concern (a superset, never less)."""
        found = set(self.everyone)
        for change in changes:
            ids = self.by_id.get(change.id)
            if ids:
                found |= ids
            for path, by_value in self.by_field.items():
                # Before and after: a change that moves a resource out of a filter concerns it.
                for state in (change.data, change.prev):
                    if state is None:
                        continue
                    value = _lookup(state, path)
                    key = None if value is _MISSING else _index_key(value)
                    if key is not None and key in by_value:
                        found |= by_value[key]
        return list(found)


class Hub:
    def __init__(self) -> None:
        self._parked: dict[str, ParkedWatchers] = {}
        self.watchers: set[Watcher] = set()
        self.closing = False

    def add(self, watcher: Watcher) -> None:
        self.watchers.add(watcher)

    def remove(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        self.unpark(watcher)

    def park(self, watcher: Watcher) -> None:
        parked = self._parked.get(watcher.collection)
        if parked is None:
            parked = self._parked[watcher.collection] = ParkedWatchers()
        parked.add(watcher)

    def unpark(self, watcher: Watcher) -> None:
        parked = self._parked.get(watcher.collection)
        if parked is not None:
            parked.discard(watcher)
            if not parked.size:
                del self._parked[watcher.collection]

    def publish(self, changes: list[Change]) -> None:
        if not self._parked:
            return
        by_collection: defaultdict[str, list[Change]] = defaultdict(list)
        for change in changes:
            if change.collection in self._parked:
                by_collection[change.collection].append(change)
        for collection, relevant in by_collection.items():
            parked = self._parked[collection]
            woken = []
            for watcher in parked.candidates(relevant):
                # Past the cursor only: a watcher that started from a snapshot newer than this
                # commit has its changes already.
                events = [
                    (kind, c)
                    for c in relevant
                    if c.revision > watcher.cursor and (kind := watcher.classify(c)) is not None
                ]
                if not events:
                    continue
                if watcher.push is not None:
                    # Synced: written from here, no task wake-up; they are the socket's now.
                    watcher.cursor = events[-1][1].revision
                    watcher.push(events)
                else:
                    woken.append(watcher)
            for watcher in woken:
                parked.discard(watcher)
                watcher.wake()
            if not parked.size:
                del self._parked[collection]

    def close_all(self) -> None:
        """End every watch (server shutdown): each stream finishes cleanly."""
        self.closing = True
        for watcher in list(self.watchers):
            watcher.close()
