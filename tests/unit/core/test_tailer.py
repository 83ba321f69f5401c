"""The tailer, without a server: every commit reaches the window and the hub once, in revision
order, whether the store hands it over itself or catches up on another process's commits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from watchroute.core.change import Change
from watchroute.core.hub import Hub
from watchroute.core.tailer import Tailer
from watchroute.core.window import Window
from watchroute.store.base import WriteOp
from watchroute.store.sqlite.engine import SQLiteStore


class RecordingHub(Hub):
    """The hub, remembering the revisions it was handed, in the order it was handed them."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[int] = []

    def publish(self, changes: list[Change]) -> None:
        self.published.extend(c.revision for c in changes)
        super().publish(changes)


def change(revision: int) -> Change:
    return Change(revision, "ADDED", "t", f"r{revision}", revision, b'{"v":1}', None, 0.0)


def test_commits_reach_the_window_and_the_hub_in_revision_order() -> None:
    window, hub = Window(capacity=64, revision=0), RecordingHub()
    tailer = Tailer(window, hub)
    for commit in ([1, 2], [3], [4, 5, 6]):
        tailer.committed([change(r) for r in commit])
    assert hub.published == [1, 2, 3, 4, 5, 6]
    assert [c.revision for c in window.after(0, 100) or []] == [1, 2, 3, 4, 5, 6]
    assert (tailer.revision, tailer.commits, tailer.changes, tailer.revisions_lost) == (6, 3, 6, 0)


async def test_a_waiter_is_released_by_the_commit_it_waits_for_and_not_before() -> None:
    tailer = Tailer(Window(capacity=64, revision=0), Hub())
    waiting = asyncio.create_task(tailer.wait_for(3, timeout=5))
    tailer.committed([change(1), change(2)])
    await asyncio.sleep(0.01)
    assert not waiting.done()
    tailer.committed([change(3)])
    assert await waiting is True
    assert await tailer.wait_for(9, timeout=0.05) is False


async def test_the_window_has_no_gap_after_catching_up_on_another_writer(tmp_path: Path) -> None:
    """Two stores on one file: each one's tailer gets its own commits as it makes them and the
    other's by catching up from the log; both windows end up with every revision, in order."""
    path = str(tmp_path / "shared.db")
    stores = [SQLiteStore(path), SQLiteStore(path)]
    tailers = [Tailer(Window(capacity=4096, revision=0), RecordingHub()) for _ in stores]
    for store, tailer in zip(stores, tailers, strict=True):
        await store.open(tailer.committed)
    try:

        async def writer(n: int) -> None:
            for i in range(40):
                ops = [WriteOp("put", "t", f"{n}-{i}-{k}", {"k": k}) for k in range(1 + i % 3)]
                await stores[n % 2].write(ops)

        await asyncio.gather(*(writer(n) for n in range(4)))
        total = 4 * sum(1 + i % 3 for i in range(40))
        caught_up = await asyncio.gather(*(t.wait_for(total, timeout=10) for t in tailers))
        assert caught_up == [True, True]
        for tailer in tailers:
            assert isinstance(tailer.hub, RecordingHub)
            assert tailer.hub.published == list(range(1, total + 1))
            assert [c.revision for c in tailer.window.after(0, total) or []] == list(range(1, total + 1))
            assert tailer.revisions_lost == 0
    finally:
        for store in stores:
            await store.close()


def test_a_gap_the_window_cannot_fill_is_refused() -> None:
    """The tailer only skips revisions it is told were compacted (the first change of a commit
    after the window); the window itself never takes a commit out of order."""
    window = Window(capacity=64, revision=5)
    with pytest.raises(ValueError, match="gap"):
        window.append([change(5)])
