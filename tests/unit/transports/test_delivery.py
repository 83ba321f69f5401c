"""Delivery of one watch to a socket, without a server: what is ready goes out in one send, and
a socket that pushes back holds its watcher where it is (nothing queues up), then gets every
change it missed, in order, once it takes more."""

from __future__ import annotations

import asyncio
from typing import cast

import orjson

from watchroute.core.change import Change
from watchroute.core.hub import Hub
from watchroute.core.tailer import Tailer
from watchroute.core.watcher import Watcher
from watchroute.core.window import Window
from watchroute.store.base import Store
from watchroute.transports.delivery import Delivery
from watchroute.watch.open import OpenedWatch
from watchroute.wire.ndjson import NDJSONFraming


class FakeSocket:
    """A connection's write: each call is one send; while `taking` is clear, a send waits."""

    def __init__(self) -> None:
        self.attempts = 0
        self.sent: list[bytes] = []
        self.taking = asyncio.Event()
        self.taking.set()

    async def write(self, frames: list[bytes]) -> None:
        self.attempts += 1
        await self.taking.wait()
        self.sent.append(b"".join(frames))

    def revisions(self) -> list[int]:
        lines = b"".join(self.sent).splitlines()
        return [event["revision"] for line in lines if (event := orjson.loads(line))["type"] != "BOOKMARK"]


def change(revision: int) -> Change:
    return Change(revision, "ADDED", "t", f"r{revision}", revision, b'{"v":1}', None, 0.0)


async def started(tailer: Tailer, socket: FakeSocket, timeout: float) -> tuple[Watcher, asyncio.Task[None]]:
    # Everything a watcher reads here is in the window: the store is never asked.
    watcher = Watcher(tailer.hub, tailer.window, cast(Store, None), "t", None, None, 0)
    watcher.__enter__()
    delivery = Delivery(OpenedWatch(watcher, 0), NDJSONFraming(), socket.write)
    task = asyncio.create_task(delivery.run(heartbeat=60, timeout=timeout, max_events_per_write=100))
    return watcher, task


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


async def test_everything_ready_goes_out_in_one_send() -> None:
    tailer = Tailer(Window(capacity=64, revision=0), Hub())
    tailer.committed([change(1), change(2)])
    tailer.committed([change(3)])
    socket = FakeSocket()
    watcher, task = await started(tailer, socket, timeout=0.5)
    await settle()
    assert socket.attempts == 1 and socket.revisions() == [1, 2, 3]  # behind: one send for all

    tailer.committed([change(4), change(5)])  # caught up: the commit is pushed, in one send
    await settle()
    assert socket.attempts == 2 and socket.revisions() == [1, 2, 3, 4, 5]
    await task
    watcher.__exit__(None, None, None)


async def test_a_blocked_socket_holds_its_watcher_then_gets_every_change_in_order() -> None:
    tailer = Tailer(Window(capacity=256, revision=0), Hub())
    socket = FakeSocket()
    watcher, task = await started(tailer, socket, timeout=2)
    await settle()
    socket.taking.clear()  # the client stops reading
    tailer.committed([change(1)])
    await settle()
    tailer.committed([change(2), change(3)])
    await settle()
    held_at, attempts = watcher.cursor, socket.attempts

    for revision in range(4, 40):
        tailer.committed([change(revision)])
        await asyncio.sleep(0)
    await settle()
    assert watcher.cursor == held_at  # blocked: it stops advancing
    assert socket.attempts == attempts  # and nothing more is tried meanwhile
    assert socket.sent == []

    socket.taking.set()
    await settle()
    assert socket.revisions() == list(range(1, 40))  # each change once, in revision order
    assert watcher.cursor == 39
    watcher.close()
    await task
    watcher.__exit__(None, None, None)
