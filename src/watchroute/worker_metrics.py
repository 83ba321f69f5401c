"""Every worker's figures in every scrape (`watchroute serve --workers N`).

A scrape of `/metrics` reaches whichever worker the kernel hands the connection to. Were each
worker to answer for itself, consecutive scrapes would show different processes' counters
under one name: Prometheus would read each switch as a counter reset, and a worker's series
would go stale whenever another answered. So each worker publishes its own figures (the data
path's, its process's and its garbage collector's) to a region of shared memory once a second
and the worker that answers a scrape reports every worker's from there, each labelled
`worker="<index>"`: every scrape is the whole server, as of at most about a second before
(`watchroute_worker_figures_age_seconds` says how long).

The parent maps the region before it forks, one slot per worker; a slot holds the time of its
last publication and the worker's metric families as JSON. A POSIX record lock on the region's
file orders writers and readers across the processes (the kernel lets go of it when its holder
dies). When a worker dies the parent empties its slot, so that the one started in its place
begins from nothing, as its counters do: Prometheus sees the reset it should.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import struct
import time
from collections.abc import Iterable, Iterator

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric

from watchroute.shared_memory import shared_region

log = logging.getLogger("watchroute")

# Room for a worker's families, including the HTTP requests by method, route and status when
# every route has met every kind of request, several times over (docs/benchmarks.md,
# *Measurements behind the code*).
SLOT_BYTES = 256 * 1024
_HEADER = struct.Struct("<dI")  # published at (seconds since the epoch), length of the JSON


class WorkerMetrics:
    """The shared region: made by the parent before it forks, used by every worker."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        size = workers * SLOT_BYTES
        self._fd, self._map = shared_region("watchroute-metrics", size)
        self._too_big_told = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def publish(self, worker: int, families: Iterable[Metric]) -> None:
        blob = orjson.dumps(
            [
                [
                    f.name,
                    f.documentation,
                    f.type,
                    f.unit,
                    [[s.name, s.labels, _value(s.value)] for s in f.samples],
                ]
                for f in families
            ]
        )
        if _HEADER.size + len(blob) > SLOT_BYTES:
            # Shown no more, rather than shown as current when they are not.
            self.clear(worker)
            if not self._too_big_told:
                log.error("worker %d's metrics take %d bytes, more than a slot holds", worker, len(blob))
                self._too_big_told = True
            return
        at = worker * SLOT_BYTES
        with self._locked():
            # Emptied first: a worker killed in the middle of the copy leaves an empty slot.
            _HEADER.pack_into(self._map, at, 0.0, 0)
            self._map[at + _HEADER.size : at + _HEADER.size + len(blob)] = blob
            _HEADER.pack_into(self._map, at, time.time(), len(blob))

    def clear(self, worker: int) -> None:
        """Forget the figures of a worker that has gone."""
        with self._locked():
            _HEADER.pack_into(self._map, worker * SLOT_BYTES, 0.0, 0)

    def read(self) -> list[tuple[int, float, list[Metric]]]:
        """(worker, published at, its families) for every worker that has published."""
        slots = []
        with self._locked():
            for worker in range(self.workers):
                at = worker * SLOT_BYTES
                published_at, length = _HEADER.unpack_from(self._map, at)
                if length:
                    start = at + _HEADER.size
                    slots.append((worker, published_at, self._map[start : start + length]))
        read = []
        for worker, published_at, blob in slots:
            try:
                families = []
                for name, documentation, typ, unit, samples in orjson.loads(blob):
                    family = Metric(name, documentation, typ, unit)
                    for sample_name, labels, value in samples:
                        family.add_sample(sample_name, labels, float(value))
                    families.append(family)
            except (ValueError, TypeError):  # not what publish writes: that worker is left out
                log.error("worker %d's metrics could not be read", worker)
                continue
            read.append((worker, published_at, families))
        return read


def _value(value: float) -> float | str:
    """JSON has no NaN or infinity (orjson writes null): those go as the strings float() reads."""
    return value if math.isfinite(value) else str(value)


def every_worker(region: WorkerMetrics) -> list[Metric]:
    """Every worker's families from `region`, merged by name (one family per name, as the format
    requires), each sample labelled with its worker; and how old each worker's are."""
    now = time.time()
    merged: dict[str, Metric] = {}
    age = GaugeMetricFamily(
        "watchroute_worker_figures_age_seconds",
        "How long ago each worker published the figures this scrape shows for it.",
        labels=["worker"],
    )
    for worker, published_at, families in region.read():
        label = str(worker)
        age.add_metric([label], max(0.0, now - published_at))
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                into.add_sample(sample.name, {"worker": label, **sample.labels}, sample.value)
    return [*merged.values(), age]
