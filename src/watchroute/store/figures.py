"""What a store's writer measures for `/metrics`: how long each write took, from reaching the
writer's queue to its commit (the queue's wait included, which is what a client waits for),
and how many writes each group commit carried.

Observed by the writer once per group commit, for its writes, from its own thread and with no
lock (histogram.py): nothing is added per event or per watcher.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from watchroute.histogram import Histogram

# Seconds: a group commit takes well under a millisecond on a quiet disk, and a write that
# waits behind a large batch or a slow fsync takes tens to hundreds.
WRITE_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Writes (requests or `_batch`es) per group commit, up to the writer's 1024.
COMMIT_WRITES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class WriteFigures:
    __slots__ = ("commit_writes", "write_seconds")

    def __init__(self) -> None:
        self.write_seconds = Histogram(WRITE_SECONDS)
        self.commit_writes = Histogram(COMMIT_WRITES)

    @staticmethod
    def now() -> float:
        """The clock `queued` times are read on."""
        return time.perf_counter()

    def committed(self, queued: Iterable[float]) -> None:
        """A group commit of the writes queued at `queued` (its refused writes included: they
        were answered too) has ended."""
        done = time.perf_counter()
        observe = self.write_seconds.observe
        writes = 0
        for at in queued:
            observe(done - at)
            writes += 1
        self.commit_writes.observe(writes)
