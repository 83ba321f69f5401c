"""The hub: which watchers a committed change may concern, and waking them.

A watcher that has read everything in the window parks here under its collection. For a parked
watcher whose transport can take events on the spot (`Watcher.push`), a commit writes the events
it concerns straight to its socket: no task wakes up per event per watcher. Any other parked
watcher the commit concerns is woken once, however many changes the commit carried, and reads
all that is ready from the window itself. Watchers that are busy (reading, or writing to a slow
socket) are not parked and so cost a commit nothing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from .events import Change

if TYPE_CHECKING:
    from .watcher import Watcher


class Hub:
    def __init__(self) -> None:
        self._parked: defaultdict[str, set[Watcher]] = defaultdict(set)
        self.watchers: set[Watcher] = set()
        self.closing = False

    def add(self, watcher: Watcher) -> None:
        self.watchers.add(watcher)

    def remove(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        self.unpark(watcher)

    def park(self, watcher: Watcher) -> None:
        self._parked[watcher.collection].add(watcher)

    def unpark(self, watcher: Watcher) -> None:
        parked = self._parked.get(watcher.collection)
        if parked is not None:
            parked.discard(watcher)
            if not parked:
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
            for watcher in parked:
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
            if not parked:
                del self._parked[collection]

    def close_all(self) -> None:
        """End every watch (server shutdown): each stream finishes cleanly."""
        self.closing = True
        for watcher in list(self.watchers):
            watcher.close()
