"""The bridge manager runs one supervisor per bridge, however many refreshes of it overlap."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from watchroute.bridges.manager import BRIDGES, BridgeManager
from watchroute.bridges.state import Bridge

CONFIG = {"direction": "in", "url": "redis://127.0.0.1:1", "topic": "t", "collection": "c", "id": "field:id"}


class _Store:
    """A store whose reads yield to the loop, as the SQLite store's (run on a thread) do."""

    async def get(self, collection: str, id: str) -> Any:
        await asyncio.sleep(0)
        if collection != BRIDGES:
            return None
        return SimpleNamespace(data=dict(CONFIG), revision=5, created_revision=5)


async def test_overlapping_refreshes_start_one_supervisor() -> None:
    # The PUT route and the follower of `_bridges` both refresh a bridge just set.
    manager = BridgeManager(SimpleNamespace(store=_Store()))
    started: list[Bridge] = []

    async def supervise(bridge: Bridge) -> None:
        started.append(bridge)
        await asyncio.Event().wait()

    manager._supervise = supervise  # type: ignore[method-assign]
    await asyncio.gather(manager.refresh("b"), manager.refresh("b"))
    await asyncio.sleep(0)
    try:
        assert len(started) == 1
        assert manager.bridges["b"] is started[0]
    finally:
        await manager.stop()
