"""The tailer: follows the log in revision order and feeds the window and the hub.

With the embedded store the log's writer is in this process and hands each commit over as it
happens; engines shared by several instances feed the same `committed` entry point from their
bus. Either way the window only ever grows by the next revision.
"""

from __future__ import annotations

import asyncio

from .events import Change
from .hub import Hub
from .window import Window


class Tailer:
    def __init__(self, window: Window, hub: Hub) -> None:
        self.window = window
        self.hub = hub
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def revision(self) -> int:
        return self.window.revision

    def committed(self, changes: list[Change]) -> None:
        self.window.append(changes)
        self.hub.publish(changes)
        if self._waiters:
            ready = [(r, f) for r, f in self._waiters if r <= self.revision]
            self._waiters = [(r, f) for r, f in self._waiters if r > self.revision]
            for _, future in ready:
                if not future.done():
                    future.set_result(None)

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until this instance has seen `revision`; False on timeout."""
        if revision <= self.revision:
            return True
        future = asyncio.get_running_loop().create_future()
        waiter = (revision, future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
