"""An OUT bridge's runner publishes each change as its watch event, without a broker or server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import orjson

from watchroute.bridges.config import BridgeConfig
from watchroute.bridges.outbound import run_outbound
from watchroute.bridges.state import Bridge
from watchroute.core.change import ADDED, MODIFIED, Change, encode
from watchroute.core.hub import Hub
from watchroute.core.window import Window


class _Store:
    revision = 2

    async def position(self, name: str) -> str | None:
        return None

    async def write(self, ops: list[Any], position: tuple[str, str] | None = None) -> None:
        pass


class _Sink:
    def __init__(self) -> None:
        self.published: list[tuple[int, bytes, Mapping[str, str]]] = []

    async def connect(self) -> None:  # the manager's part: run_outbound is handed a connected sink
        pass

    async def close(self) -> None:
        pass

    async def last_accepted(self) -> int | None:
        return None

    async def publish(self, revision: int, event: bytes, headers: Mapping[str, str]) -> None:
        self.published.append((revision, event, headers))


async def test_changes_are_published_as_watch_events() -> None:
    window = Window(16, 0)
    window.append(
        [
            Change(1, ADDED, "c", "a", 1, encode({"n": 1}), None, 0.0),
            Change(2, MODIFIED, "c", "a", 1, encode({"n": 2}), encode({"n": 1}), 0.0),
        ]
    )
    runtime = SimpleNamespace(store=_Store(), hub=Hub(), window=window)
    bridge = Bridge(
        "out", BridgeConfig(direction="out", url="mqtt://broker", collection="c", topic="t"), 1, 0
    )
    sink = _Sink()
    runner = asyncio.create_task(run_outbound(bridge, sink, runtime))
    try:
        async with asyncio.timeout(5):
            while len(sink.published) < 2 and not runner.done():
                await asyncio.sleep(0.01)
        if runner.done():
            runner.result()  # it returns only when cancelled: raises what stopped it
    finally:
        runner.cancel()
    assert [(revision, orjson.loads(event)["type"]) for revision, event, _ in sink.published] == [
        (1, ADDED),
        (2, MODIFIED),
    ]
    assert orjson.loads(sink.published[1][1])["object"]["data"] == {"n": 2}
    assert bridge.accepted == 2
