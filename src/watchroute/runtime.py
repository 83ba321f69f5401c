"""The running parts of one server instance, wired in data-path order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from watchroute import metrics
from watchroute.bridges.manager import BridgeManager
from watchroute.core.hub import Hub
from watchroute.core.initial import InitialStates
from watchroute.core.tailer import Tailer
from watchroute.core.window import Window
from watchroute.http_counts import HTTPCounts
from watchroute.leases import Sweeper
from watchroute.schemas import SchemaBook
from watchroute.security.policy import Security
from watchroute.security.shared_limits import WorkerLimits
from watchroute.settings import Settings
from watchroute.store import Store, open_store
from watchroute.watch.open import InitialPaging, WatchSources
from watchroute.worker_metrics import WorkerMetrics

if TYPE_CHECKING:
    from watchroute.capture.capturer import Capture

log = logging.getLogger("watchroute")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = open_store(settings)
        self.hub = Hub(coalesce=settings.coalesce_ms / 1000, max_gathered=settings.max_events_per_write)
        self.window = Window(settings.window_events, 0)
        self.tailer = Tailer(self.window, self.hub)
        self.initial_states = InitialStates(settings.max_initial_states)
        self.security = Security(settings)
        self.schemas = SchemaBook()
        self.http = HTTPCounts()  # the app teaches it its route templates
        self.metrics = metrics.Metrics(self)
        self.sweeper = Sweeper(self.store, settings.lease_sweep_interval)
        self.bridges = BridgeManager(self)  # brokers and webhooks in and out (bridges/)
        self._compactor: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self.capture: Capture | None = None
        # Collections written by change capture alone: REST writes to them are refused (405).
        self.captured: frozenset[str] = frozenset()
        self.watches = WatchSources(
            self.store,
            self.tailer,
            self.window,
            self.hub,
            self.initial_states,
            InitialPaging(
                settings.max_events_per_write, settings.initial_page_bytes, settings.initial_snapshot_seconds
            ),
            self.security.admit_watch,
            self._capture_epoch,
        )

    def share_with_workers(self, limits: WorkerLimits, figures: WorkerMetrics, worker: int) -> None:
        """Make this the process `worker` of several serving one port: limits and watch caps
        count for them all, and a scrape of any shows every worker's figures."""
        self.security.share_with_workers(limits, worker)
        self.metrics.share_with_workers(figures, worker)

    async def start(self) -> None:
        await self.security.start()
        await self.store.open(self.tailer.committed, self.tailer.lost)
        # The window starts empty at the store's revision; older changes come from the log.
        self.window.revision = self.store.revision
        await self.schemas.start(self)
        if self.settings.capture:
            await self._start_capture()
        await self.bridges.start()
        self._compactor = asyncio.create_task(self._compaction_loop(), name="watchroute-compactor")
        # Its first pass at once: leases that lapsed while the server was down go first.
        self._sweeping = asyncio.create_task(self.sweeper.run_forever(), name="watchroute-sweeper")
        if self.metrics.region is not None:
            self._publisher = asyncio.create_task(self.metrics.publish_forever())

    async def _start_capture(self) -> None:
        from watchroute.capture.capturer import Capture
        from watchroute.capture.tables import CaptureRefused
        from watchroute.store.postgres import PostgresStore

        if not isinstance(self.store, PostgresStore):
            raise CaptureRefused("--capture needs the PostgreSQL store: --database postgresql://...")
        self.capture = Capture(self.settings, self.store, self._end_captured_watches)
        self.captured = self.capture.collections
        await self.capture.start()

    def _capture_epoch(self, collection: str) -> int | None:
        capture = self.capture
        if capture is None or collection not in capture.collections:
            return None
        return capture.epoch

    def _end_captured_watches(self) -> None:
        """A new capture epoch: each watch of a captured collection ends; its client's resume
        is answered 410 (watch/open.py) and it relists."""
        for watcher in [w for w in self.hub.watchers if w.collection in self.captured]:
            watcher.close()

    async def stop(self) -> None:
        self.hub.close_all()
        await self.schemas.stop()
        await self.bridges.stop()
        if self.capture is not None:
            await self.capture.stop()
        for task in (self._sweeping, self._compactor, self._publisher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.store.close()
        await self.security.stop()

    async def _compaction_loop(self) -> None:
        """Keep the log within the history horizon."""
        s = self.settings
        if not s.history_events and not s.history_seconds:
            return
        while True:
            try:
                await self.store.compact(s.history_events, s.history_seconds)
            except Exception:  # a failed pass is retried on the next one
                log.exception("log compaction failed")
            await asyncio.sleep(s.compaction_interval)
