"""The window: the latest committed changes, already decoded and encoded, in memory.

Watchers that are caught up or close behind read from here; a watcher further behind reads
the log and comes back once it has caught up with the window's start. The window holds at most
`capacity` changes, so its memory is bounded however many watchers lag.
"""

from __future__ import annotations

from watchroute.core.change import Change


class Window:
    def __init__(self, capacity: int, revision: int) -> None:
        self.capacity = capacity
        # Invariant: _changes holds revisions (revision - len + 1 .. revision), gap-free.
        self._changes: list[Change] = []
        self.revision = revision

    @property
    def first_revision(self) -> int:
        """The oldest revision held (revision + 1 when empty)."""
        return self.revision - len(self._changes) + 1

    @property
    def size(self) -> int:
        """Changes held now (up to twice `capacity` between two trims)."""
        return len(self._changes)

    def append(self, changes: list[Change]) -> None:
        for change in changes:
            if change.revision != self.revision + 1:
                raise ValueError(f"window got revision {change.revision} after {self.revision}: a gap")
            self._changes.append(change)
            self.revision = change.revision
        # Trim in bulk so that appending stays O(1) amortised.
        if len(self._changes) >= 2 * self.capacity:
            del self._changes[: len(self._changes) - self.capacity]

    def restart(self, revision: int) -> None:
        """Hold nothing, from `revision` on (the changes before were lost to compaction)."""
        self._changes = []
        self.revision = revision

    def after(self, revision: int, limit: int) -> list[Change] | None:
        """Up to `limit` changes after `revision`; None when the window no longer reaches back
        that far (the caller reads the log instead)."""
        if revision >= self.revision:
            return []
        start = revision + 1 - self.first_revision
        if start < 0:
            return None
        return self._changes[start : start + limit]
