"""The running parts of one server instance, wired in data-path order."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from . import metrics
from .hub import Hub
from .security.policy import Security
from .settings import Settings
from .store import Store, open_store
from .tailer import Tailer
from .window import Window

log = logging.getLogger("watchroute")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = open_store(settings)
        self.hub = Hub(coalesce=settings.coalesce_ms / 1000)
        self.window = Window(settings.window_events, 0)
        self.tailer = Tailer(self.window, self.hub)
        self.security = Security(settings)
        self.worker: int | None = None  # this process's index under `serve --workers N`
        self.metrics = metrics.registry_for(self)
        self._compactor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.security.start()
        await self.store.open(self.tailer.committed)
        # The window starts empty at the store's revision; older changes come from the log.
        self.window.revision = self.store.revision
        self._compactor = asyncio.create_task(self._compaction_loop(), name="watchroute-compactor")

    async def stop(self) -> None:
        self.hub.close_all()
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
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
