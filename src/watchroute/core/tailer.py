"""The tailer: follows the log in revision order and feeds the window and the hub.

With the embedded store the log's writer is in this process and hands each commit over as it
happens; engines shared by several instances feed the same `committed` entry point from their
bus. Either way the window only ever grows by the next revision.
"""

from __future__ import annotations

import asyncio
import logging

from watchroute.core.change import Change
from watchroute.core.hub import Hub
from watchroute.core.window import Window

log = logging.getLogger("watchroute")


class Tailer:
    def __init__(self, window: Window, hub: Hub) -> None:
        self.window = window
        self.hub = hub
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # For /metrics: what has gone through, and what was lost before it could (`lost`).
        self.commits = 0
        self.changes = 0
        self.revisions_lost = 0

    @property
    def revision(self) -> int:
        return self.window.revision

    def committed(self, changes: list[Change]) -> None:
        if changes and changes[0].revision > self.window.revision + 1:
            self.lost(changes[0].revision - 1)
        self.window.append(changes)
        self.commits += 1
        self.changes += len(changes)
        self.hub.publish(changes)
        if self._waiters:
            ready = [(r, f) for r, f in self._waiters if r <= self.revision]
            self._waiters = [(r, f) for r, f in self._waiters if r > self.revision]
            for _, future in ready:
                if not future.done():
                    future.set_result(None)

    def lost(self, revision: int) -> None:
        """Revisions up to `revision` were compacted before this instance could read them (it
        shares the store with others and fell further behind than the history horizon): told
        by the store, or seen as a hole before the next commit. Nobody may be taken past them
        in silence: the window starts again after them, and every parked watcher is woken to
        read the log, where it meets 410 Expired and relists."""
        if revision <= self.revision:
            return
        log.error("changes %d-%d were compacted before this instance read them", self.revision + 1, revision)
        self.revisions_lost += revision - self.revision
        self.hub.wake_all()
        self.window.restart(revision)

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until this instance has seen `revision`; False on timeout."""
        if revision <= self.revision:
            return True
        future = asyncio.get_running_loop().create_future()
        waiter = (revision, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
