"""`/metrics`: one instance's figures in the Prometheus text format.

Every figure is read when Prometheus scrapes, from what the data path keeps anyway: the window,
the hub's watchers and their cursors (their lag is worked out here, at the scrape), and plain
integers added once per commit, per socket write (the events and bytes it carried), per request
(http_counts.py) or per write (the store writer's histograms, histogram.py): never per event,
never under a lock, so that being measurable costs the fan-out nothing. prometheus-client writes
the format and adds its process (CPU, resident memory, open files) and Python (garbage
collector, version) collectors.

With `--workers N` each worker process keeps its own figures, and whichever worker answers a
scrape reports every worker's, each labelled `worker="<index>"` (worker_metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import GC_COLLECTOR, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from watchroute.histogram import Histogram
from watchroute.security import audit
from watchroute.store.figures import WriteFigures
from watchroute.worker_metrics import WorkerMetrics, every_worker

if TYPE_CHECKING:
    from watchroute.runtime import Runtime

log = logging.getLogger("watchroute")

# What a scraper that asks for nothing in particular gets: the text format every Prometheus reads.
MEDIA_TYPE = CONTENT_TYPE_PLAIN_0_0_4

REFUSAL_EVENTS = (audit.AUTH_FAILED, audit.DENIED, audit.RATE_LIMITED, audit.CONNECTION_LIMITED)
LAG_BUCKETS = (0, 1, 10, 100, 1000, 10_000, 100_000)


class RuntimeCollector(Collector):
    """The data path's figures, read from `runtime` at each scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"watchroute_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"watchroute_{name}", doc, value=value)

        rt = self.runtime
        window, hub, tailer = rt.window, rt.hub, rt.tailer
        yield gauge("revision", "The last revision this instance has taken to its watchers.", tailer.revision)
        yield gauge(
            "window_first_revision",
            "The oldest revision a watcher can resume from without reading the log.",
            window.first_revision,
        )
        yield gauge(
            "compacted_revision",
            "The history horizon: a watch from an older revision meets 410.",
            rt.store.compacted,
        )
        yield gauge("window_events", "Changes held in memory for watchers to read.", window.size)
        yield gauge("watchers", "Open watches, on every transport.", len(hub.watchers))
        by_transport = GaugeMetricFamily(
            "watchroute_watchers_by_transport", "Open watches, by transport.", labels=["transport"]
        )
        for transport, count in sorted(hub.by_transport.items()):
            by_transport.add_metric([transport], count)
        yield by_transport
        yield gauge(
            "watchers_caught_up",
            "Open watches that have read everything and wait for the next commit.",
            hub.parked_count(),
        )
        yield counter(
            "commits",
            "Commits taken to the watchers (a group commit of many writes counts once).",
            tailer.commits,
        )
        yield counter("changes", "Changes taken to the watchers.", tailer.changes)
        yield counter(
            "revisions_lost",
            "Revisions compacted away before this instance read them (its watchers met 410).",
            tailer.revisions_lost,
        )
        yield counter(
            "hub_pushes",
            "Socket writes made straight from a commit to a caught-up watcher.",
            hub.pushes,
        )
        yield counter(
            "hub_wakeups",
            "Caught-up watchers woken by a commit to read it themselves.",
            hub.wakeups,
        )
        yield counter(
            "delivered_events",
            "Changes and initial states written to watchers, on every transport.",
            hub.sent_events,
        )
        yield counter(
            "delivered_bytes",
            "Bytes of events, bookmarks and heartbeats written to watchers (before HTTP chunk, "
            "WebSocket frame and TLS overheads).",
            hub.sent_bytes,
        )
        yield from _lag(rt)
        expired = CounterMetricFamily(
            "watchroute_expired",
            "Watches answered 410 Expired: asked to start before the history horizon (start), "
            "fallen behind it while watching (behind), initial state not out in time (initial).",
            labels=["phase"],
        )
        for phase, count in hub.expired.items():
            expired.add_metric([phase], count)
        yield expired
        slow = CounterMetricFamily(
            "watchroute_slow_watchers_ended",
            "Watches ended because their client read too slowly: fallen behind the history horizon "
            "(410), initial state not out in time (410), or nothing read for two heartbeats.",
            labels=["why"],
        )
        slow.add_metric(["fell_behind"], hub.expired["behind"])
        slow.add_metric(["initial_too_slow"], hub.expired["initial"])
        slow.add_metric(["unresponsive"], hub.unresponsive)
        yield slow
        requests = CounterMetricFamily(
            "watchroute_http_requests",
            "HTTP responses started, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(rt.http.counts.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        # An engine that keeps no figures shows empty histograms rather than none.
        figures = getattr(rt.store, "figures", None) or WriteFigures()
        yield figures.write_seconds.family(
            "watchroute_store_write_seconds",
            "Time from a write (a request or a _batch) reaching the store's writer to its commit.",
        )
        yield figures.commit_writes.family(
            "watchroute_store_commit_writes", "Writes (requests or _batches) per group commit."
        )
        if rt.capture is not None:
            yield gauge(
                "capture_slot_lag_bytes",
                "WAL PostgreSQL keeps for the capture's replication slot past what it has confirmed.",
                rt.capture.health.lag_bytes,
            )
            yield gauge("capture_leader", "1 when this instance runs the change capture.", rt.capture.leading)
        yield from rt.bridges.families()
        refusals = CounterMetricFamily(
            "watchroute_refusals",
            "Requests refused by authentication, permissions or limits, by audit event "
            "(counted for the whole process).",
            labels=["event"],
        )
        # Every event from the start, at zero: a rate over a series that appears only with its
        # first refusal misses that refusal.
        for event in sorted({*REFUSAL_EVENTS, *audit.counts}):
            refusals.add_metric([event], audit.counts[event])
        yield refusals


def _lag(rt: Runtime) -> Iterator[Metric]:
    """How far behind the open watchers are, from their cursors: computed at the scrape, one
    pass over the watchers, nothing kept per event."""
    lags = rt.hub.lags(rt.tailer.revision)
    histogram = Histogram(LAG_BUCKETS)
    histogram.observe_all(lags)
    yield histogram.gauge_family(
        "watchroute_watcher_lag_revisions", "Open watches by how many revisions they are behind."
    )
    yield GaugeMetricFamily(
        "watchroute_watcher_lag_max_revisions",
        "Revisions the furthest-behind open watch is behind (0 without watches).",
        value=max(lags, default=0),
    )


class Metrics:
    """One app's `/metrics`, with collectors of its own, so that several apps in one process (or
    a host app's own registry) do not mix their figures.

    Collectors that read the event loop's objects run on it; the process collector runs in a
    thread, because it lists /proc/self/fd, which takes milliseconds with many connections
    open: the loop that delivers events should not wait for that at every scrape.
    """

    PUBLISH_INTERVAL = 1.0  # seconds, under --workers

    def __init__(self, runtime: Runtime) -> None:
        self.on_loop: list[Collector] = [RuntimeCollector(runtime), GC_COLLECTOR]
        self.off_loop = ProcessCollector(registry=None)
        self.platform = PlatformCollector(registry=None)
        self.region: WorkerMetrics | None = None
        self.worker = 0

    def share_with_workers(self, region: WorkerMetrics, worker: int) -> None:
        """Make this worker `worker` of several: a scrape shows every worker's figures from the
        region, where `publish_forever` puts this one's."""
        self.region, self.worker = region, worker

    async def _local(self) -> list[Metric]:
        """This process's figures."""
        off_loop = await asyncio.to_thread(lambda: list(self.off_loop.collect()))
        return [*(f for c in self.on_loop for f in c.collect()), *off_loop]

    async def publish_forever(self) -> None:
        """Under --workers: this worker's figures to the region, once a second, until cancelled."""
        region = self.region
        assert region is not None
        while True:
            try:
                region.publish(self.worker, await self._local())
            except Exception:
                log.exception("publishing this worker's metrics failed")
            await asyncio.sleep(self.PUBLISH_INTERVAL)

    async def families(self, process: bool = True) -> list[Metric]:
        """The server's own figures: this process's, or under --workers every worker's.
        `process=False` leaves out this process's own (CPU, memory, open files), which cost a
        listing of /proc/self/fd, where a reader only wants the data path's."""
        if self.region is not None:
            return every_worker(self.region)
        if process:
            return await self._local()
        return [f for c in self.on_loop for f in c.collect()]

    async def scrape(self, accept: str | None) -> tuple[bytes, str]:
        """The figures and their media type, in the format the scraper's Accept header prefers
        (OpenMetrics, or Prometheus text)."""
        families = await self.families()
        encode, media_type = choose_encoder(accept or "")
        return encode(_Families([*families, *self.platform.collect()])), media_type


class _Families:
    """What an encoder reads a registry for: its families."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
