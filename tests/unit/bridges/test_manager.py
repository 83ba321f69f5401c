"""The bridge manager runs one supervisor per bridge, however many refreshes of it overlap."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest

from watchroute.bridges import manager as manager_module
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


class _Leading:
    async def acquire(self) -> bool:
        return True

    async def held(self) -> bool:
        return True

    async def release(self) -> None:
        pass


async def test_a_bridge_stops_though_its_client_took_the_first_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aio-pika, cancelled while it connects to a broker that refuses the login, raises a
    # connection error instead: the bridge's loop takes it for a failed broker and backs off.
    monkeypatch.setattr(manager_module, "leadership_for", lambda store, name: _Leading())
    manager = BridgeManager(SimpleNamespace(store=_Store()))
    connecting = asyncio.Event()

    async def run(bridge: Bridge) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # taken for a login the broker refused
            connecting.set()
            await asyncio.sleep(60)  # connecting
        await asyncio.sleep(60)  # the backoff

    manager._run = run  # type: ignore[method-assign]
    await manager.refresh("b")
    await asyncio.wait_for(connecting.wait(), 5)
    stopping = asyncio.ensure_future(manager.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "the bridge's supervisor waited for its runner, which was backing off"
    assert manager.bridges == {}
