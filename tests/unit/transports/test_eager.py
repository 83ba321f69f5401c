"""Sends run on the spot, and what happens when one has to wait and is then given up."""

from __future__ import annotations

import asyncio

import pytest

from watchroute.transports import eager


async def locked_send(lock: asyncio.Lock, out: list[str], name: str) -> None:
    async with lock:
        out.append(name)


async def test_a_send_that_need_not_wait_finishes_on_the_spot():
    out: list[str] = []
    assert eager.send_now(locked_send(asyncio.Lock(), out, "a")) is None
    assert out == ["a"]


async def test_a_cancelled_pending_send_passes_the_lock_on():
    lock = asyncio.Lock()
    out: list[str] = []
    await lock.acquire()  # another sender holds the connection
    pending = eager.send_now(locked_send(lock, out, "given up"))
    assert pending is not None
    finisher = asyncio.ensure_future(eager.finish(pending))
    third = asyncio.ensure_future(locked_send(lock, out, "next"))
    await asyncio.sleep(0)
    lock.release()  # the lock is promised to the pending send's waiter...
    finisher.cancel()  # ...which is given up before it runs again
    with pytest.raises(asyncio.CancelledError):
        await finisher
    await asyncio.wait_for(third, 1)  # the next sender still gets the lock
    assert out == ["next"] and not lock.locked()
