"""Rate limits and watch caps held by the worker processes of one server together.

`watchroute serve --workers N` without `redis_url`: a limit of 100 requests a minute, or 1000
concurrent watches, must hold for the server, not N times over. The parent maps one region of
shared memory before it forks; each worker counts in it under a POSIX record lock on the region's
file. The kernel lets go of that lock when its holder dies, so a worker killed while it holds the
lock cannot stall the others. Such a lock belongs to the process, not to a thread, and does not
nest, so within a process a re-entrant mutex and a depth count stand in front of it.

Keys are hashed with a secret made at start, so that nobody can pick keys that land where
another's bucket is.

Buckets: a table of (key hash, tokens, last refill) slots. A key hashes to a window of `PROBE`
slots; when every slot of the window is taken by other keys, the one used longest ago is given
to the new key (the bucket most likely to be full again anyway). That takes far more keys in use
at once than the table's 65,536 slots hold before it happens at all.

Watch counts: one count per worker, in total and per identity (hashed, in windows like the
buckets). An identity's count is the sum over the workers. When a worker dies, the parent clears
its counts (its watches ended with it) before it starts another in its place. An identity that
finds its window full (tens of thousands of identities with watches open at once) is counted by
each worker on its own: its cap then holds per worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

from watchroute.security.limits import Rate, WatchCounts, take_token
from watchroute.shared_memory import shared_region

BUCKET_SLOTS = 1 << 16
IDENTITY_SLOTS = 1 << 15
PROBE = 8
BUCKET_WIDTH = 3  # fields of a bucket slot: key hash, tokens, last refill
_EMPTY = 0


def _window(h: int, slots: int) -> range:
    start = (h % (slots // PROBE)) * PROBE
    return range(start, start + PROBE)


class WorkerLimits:
    """The shared region: made by the parent before it forks, used by every worker."""

    def __init__(
        self, workers: int, bucket_slots: int = BUCKET_SLOTS, identity_slots: int = IDENTITY_SLOTS
    ) -> None:
        self.workers = workers
        self.bucket_slots = bucket_slots
        self.identity_slots = identity_slots
        self._secret = os.urandom(16)
        # 8-byte fields: the bucket slots, a total per worker, then the identity slots (a hash,
        # then a count per worker).
        self.identity_width = 1 + workers
        self.totals_at = bucket_slots * BUCKET_WIDTH
        self.identities_at = self.totals_at + workers
        size = 8 * (self.identities_at + identity_slots * self.identity_width)
        self._fd, self._map = shared_region("watchroute-limits", size)
        self.q = memoryview(self._map).cast("q")  # the same memory as integers...
        self.d = memoryview(self._map).cast("d")  # ...and as floats
        self._mutex = threading.RLock()
        self._depth = 0

    def hash(self, key: str) -> int:
        """The same in every worker (str's hash() is salted per interpreter); never _EMPTY."""
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._secret).digest()
        return int.from_bytes(digest, "little", signed=True) or 1

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        # A watcher's end may come from the garbage collector, in any thread and inside another
        # locked section: the mutex orders this process's threads, the depth keeps the record
        # lock held until the outermost section ends.
        with self._mutex:
            if not self._depth:
                fcntl.lockf(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if not self._depth:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def clear_worker(self, worker: int) -> None:
        """Forget the watches of a worker that has gone: they ended with it."""
        with self.locked():
            self.q[self.totals_at + worker] = 0
            first, width = self.identities_at + 1 + worker, self.identity_width
            for at in range(first, first + self.identity_slots * width, width):
                self.q[at] = 0

    def buckets(self) -> SharedBuckets:
        return SharedBuckets(self)

    def watch_counts(self, worker: int, max_total: int, max_per_identity: int) -> SharedWatchCounts:
        return SharedWatchCounts(self, worker, max_total, max_per_identity)

    def identity_slot(self, h: int, claim: bool) -> int | None:
        """Where identity `h`'s counts are (with `claim`, a free slot if it has none); or None."""
        q, width, base = self.q, self.identity_width, self.identities_at
        free = None
        for slot in _window(h, self.identity_slots):
            at = base + slot * width
            if q[at] == h:
                return at
            if free is None and (q[at] == _EMPTY or not any(q[at + 1 : at + width])):
                free = at
        if not claim or free is None:
            return None
        q[free] = h
        for column in range(1, width):
            q[free + column] = 0
        return free


class SharedBuckets:
    """Token buckets every worker takes from (the same `take` as LocalBuckets)."""

    def __init__(self, region: WorkerLimits) -> None:
        self.region = region

    def take(self, key: str, rate: Rate) -> float:
        region, q, d = self.region, self.region.q, self.region.d
        h = region.hash(key)
        with region.locked():
            now = time.monotonic()  # one clock for every process of the machine, read in turn
            slot = empty = oldest = None
            for index in _window(h, region.bucket_slots):
                at = index * BUCKET_WIDTH
                if q[at] == h:
                    slot = at
                    break
                if q[at] == _EMPTY:
                    empty = at if empty is None else empty
                elif oldest is None or d[at + 2] < d[oldest + 2]:
                    oldest = at
            if slot is None:
                slot = empty if empty is not None else oldest
                assert slot is not None
                q[slot], d[slot + 1], d[slot + 2] = h, rate.capacity, now
            tokens, wait = take_token(d[slot + 1], d[slot + 2], now, rate)
            d[slot + 1], d[slot + 2] = tokens, now
        return wait


class SharedWatchCounts(WatchCounts):
    """WatchCounts summed over the workers; this worker adds and removes in its own column."""

    def __init__(self, region: WorkerLimits, worker: int, max_total: int, max_per_identity: int) -> None:
        super().__init__(max_total, max_per_identity)
        self.region = region
        self.column = worker + 1  # within an identity slot; 0 is the hash
        self._total_at = region.totals_at + worker
        # This worker's watches per identity that has a slot (pinned while they are open: a slot
        # whose counts are all zero is free), and of those counted here alone (no slot).
        self._slot_of: dict[str, int] = {}
        self._alone: Counter[str] = Counter()

    def _totals(self) -> int:
        region = self.region
        return sum(region.q[region.totals_at : region.totals_at + region.workers])

    def _identity(self, key: str, at: int | None) -> int:
        shared = 0 if at is None else sum(self.region.q[at + 1 : at + self.region.identity_width])
        return shared + self._alone[key]

    def _slot(self, key: str, claim: bool) -> int | None:
        at = self._slot_of.get(key)
        return at if at is not None else self.region.identity_slot(self.region.hash(key), claim)

    def refusal(self, key: str | None) -> str | None:
        with self.region.locked():
            return self._refusal(key, None if key is None else self._slot(key, False))

    def _refusal(self, key: str | None, at: int | None) -> str | None:
        if self._totals() >= self.max_total:
            return self.total_full()
        if key is not None and self._identity(key, at) >= self.max_per_identity:
            return self.identity_full()
        return None

    def try_add(self, key: str | None) -> str | None:
        region = self.region
        with region.locked():
            at = None if key is None else self._slot(key, True)
            why = self._refusal(key, at)
            if why is not None:
                return why
            region.q[self._total_at] += 1
            if key is not None:
                if at is not None:
                    region.q[at + self.column] += 1
                    self._slot_of[key] = at
                else:
                    self._alone[key] += 1
        return None

    def add(self, key: str | None) -> None:
        self.try_add(key)

    def remove(self, key: str | None) -> None:
        region = self.region
        with region.locked():
            region.q[self._total_at] = max(0, region.q[self._total_at] - 1)
            if key is None:
                return
            if self._alone[key]:
                self._alone[key] -= 1
                if not self._alone[key]:
                    del self._alone[key]
                return
            at = self._slot_of.get(key)
            if at is not None:
                region.q[at + self.column] -= 1
                if not region.q[at + self.column]:
                    del self._slot_of[key]
