"""Rate limits and watch caps held by the worker processes of one server together.

`watchroute serve --workers N` without `redis_url`: a limit of 100 requests a minute, or 1000
concurrent watches, must hold for the server, not N times over. The parent maps one region of
shared memory before it forks; each worker counts in it under a POSIX record lock on the region's
file. The kernel lets go of that lock when its holder dies, so a worker killed while it holds the
lock cannot stall the others.

Buckets: a table of (key hash, tokens, last refill) slots. A key hashes to a window of `PROBE`
slots; when every slot of the window is taken by other keys, the one used longest ago is given
to the new key (the bucket most likely to be full again anyway). That takes far more keys in use
at once than the table's 65,536 slots hold before it happens at all.

Watch counts: one count per worker, in total and per identity (hashed, in windows like the
buckets). An identity's count is the sum over the workers. A worker that starts, or starts again
after one died, clears its own counts first: the watches of the one before it ended with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import tempfile
import time
from collections.abc import Iterator

from .limits import Rate, WatchCounts, take_token

log = logging.getLogger("watchroute")

BUCKET_SLOTS = 1 << 16
IDENTITY_SLOTS = 1 << 14
PROBE = 8
BUCKET_WIDTH = 3  # fields of a bucket slot: key hash, tokens, last refill
_EMPTY = 0


def _hash(key: str) -> int:
    """The same in every process (str's hash() is salted per interpreter); never _EMPTY."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little", signed=True)
    return h or 1


def _window(h: int, slots: int) -> range:
    start = (h % (slots // PROBE)) * PROBE
    return range(start, start + PROBE)


class WorkerLimits:
    """The shared region: made by the parent before it forks, used by every worker."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        # 8-byte fields: the bucket slots, a total per worker, then the identity slots (a hash,
        # then a count per worker).
        self.identity_width = 1 + workers
        self.totals_at = BUCKET_SLOTS * BUCKET_WIDTH
        self.identities_at = self.totals_at + workers
        size = 8 * (self.identities_at + IDENTITY_SLOTS * self.identity_width)
        if hasattr(os, "memfd_create"):  # Linux: memory with no name in any file system
            self._fd = os.memfd_create("watchroute-limits")
        else:
            self._fd, path = tempfile.mkstemp(prefix="watchroute-limits-")
            os.unlink(path)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)  # shared, and so inherited shared across fork
        self.q = memoryview(self._map).cast("q")  # the same memory as integers...
        self.d = memoryview(self._map).cast("d")  # ...and as floats

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def buckets(self) -> SharedBuckets:
        return SharedBuckets(self)

    def watch_counts(self, worker: int, max_total: int, max_per_identity: int) -> SharedWatchCounts:
        return SharedWatchCounts(self, worker, max_total, max_per_identity)

    def identity_slot(self, h: int, claim: bool) -> int | None:
        """Where identity `h`'s counts are (with `claim`, a free slot if it has none); or None."""
        q, width, base = self.q, self.identity_width, self.identities_at
        free = None
        for slot in _window(h, IDENTITY_SLOTS):
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
        h = _hash(key)
        region, q, d = self.region, self.region.q, self.region.d
        now = time.monotonic()  # one clock for every process of the machine
        with region.locked():
            slot = empty = oldest = None
            for index in _window(h, BUCKET_SLOTS):
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
        self._warned = False
        with region.locked():
            # What a worker before this one on the same socket counted ended with it.
            region.q[self._total_at] = 0
            first, width = region.identities_at + self.column, region.identity_width
            for at in range(first, first + IDENTITY_SLOTS * width, width):
                region.q[at] = 0

    def _totals(self) -> int:
        region = self.region
        return sum(region.q[region.totals_at : region.totals_at + region.workers])

    def _identity(self, at: int | None) -> int:
        return 0 if at is None else sum(self.region.q[at + 1 : at + self.region.identity_width])

    def refusal(self, key: str | None) -> str | None:
        with self.region.locked():
            return self._refusal(key, None if key is None else self.region.identity_slot(_hash(key), False))

    def _refusal(self, key: str | None, at: int | None) -> str | None:
        if self._totals() >= self.max_total:
            return self.total_full()
        if key is not None and self._identity(at) >= self.max_per_identity:
            return self.identity_full()
        return None

    def try_add(self, key: str | None) -> str | None:
        region = self.region
        with region.locked():
            at = None if key is None else region.identity_slot(_hash(key), True)
            why = self._refusal(key, at)
            if why is not None:
                return why
            region.q[self._total_at] += 1
            if at is not None:
                region.q[at + self.column] += 1
            elif key is not None and not self._warned:
                # Thousands of identities hashed into one window: this one counts in the total only.
                log.warning("watch caps: no room to count another identity's watches across workers")
                self._warned = True
        return None

    def add(self, key: str | None) -> None:
        self.try_add(key)

    def remove(self, key: str | None) -> None:
        region = self.region
        with region.locked():
            region.q[self._total_at] = max(0, region.q[self._total_at] - 1)
            at = None if key is None else region.identity_slot(_hash(key), False)
            if at is not None and region.q[at + self.column] > 0:
                region.q[at + self.column] -= 1
