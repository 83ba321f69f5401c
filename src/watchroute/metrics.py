"""`/metrics`: one instance's figures in the Prometheus text format.

Every figure is read when Prometheus scrapes, from what the data path keeps anyway: the window,
the hub's watchers, and plain counters bumped once per commit (never once per watcher or per
event), so that being measurable costs the fan-out nothing. prometheus-client writes the format
and adds its process (CPU, resident memory, open files) and Python (garbage collector, version)
collectors.

With `--workers N` each worker process keeps its own figures, and whichever worker answers a
scrape reports every worker's, each labelled `worker="<index>"` (worker_metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import GC_COLLECTOR, CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from .security import audit
from .worker_metrics import WorkerMetrics, WorkersCollector

if TYPE_CHECKING:
    from .runtime import Runtime

# What a scraper that asks for nothing in particular gets: the text format every Prometheus reads.
MEDIA_TYPE = CONTENT_TYPE_PLAIN_0_0_4


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
        yield gauge("window_events", "Changes held in memory for watchers to read.", window.size)
        yield gauge("watchers", "Open watches, on every transport.", len(hub.watchers))
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
        refusals = CounterMetricFamily(
            "watchroute_refusals",
            "Requests refused by authentication, permissions or limits, by audit event "
            "(counted for the whole process).",
            labels=["event"],
        )
        for event, count in sorted(audit.counts.items()):
            refusals.add_metric([event], count)
        yield refusals


def registry_for(runtime: Runtime) -> CollectorRegistry:
    """A registry of its own per app, so that several apps in one process (or a host app's own
    registry) do not mix their figures."""
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(runtime))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(GC_COLLECTOR)
    return registry


def worker_registry(
    runtime: Runtime, region: WorkerMetrics, worker: int
) -> tuple[CollectorRegistry, WorkersCollector]:
    """The registry of one worker of several, with every worker's figures from the region (the
    platform's are the same for all), and the collector that publishes this worker's there."""
    on_loop = CollectorRegistry()
    on_loop.register(RuntimeCollector(runtime))
    on_loop.register(GC_COLLECTOR)
    workers = WorkersCollector(region, worker, on_loop, ProcessCollector(registry=None))
    registry = CollectorRegistry()
    registry.register(workers)
    PlatformCollector(registry=registry)
    return registry, workers


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The figures and their media type, in the format the scraper's Accept header prefers
    (OpenMetrics, or Prometheus text)."""
    encode, media_type = choose_encoder(accept or "")
    return encode(registry), media_type
