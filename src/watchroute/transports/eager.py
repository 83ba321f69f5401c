"""Running a send coroutine on the spot, so that a commit can write to a caught-up watcher's
socket without waking the watcher's task.

A send to a socket that takes more finishes without ever waiting: `send_now` runs it to the
end and the caller moves on. Only when the socket pushes back (flow control) does the send
wait; then `send_now` hands back the coroutine and what it waits on, and the watcher's own
task finishes it with `finish`. (Python 3.12's eager tasks do the same, at the cost of a Task
per send.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

Pending = tuple[Coroutine[Any, Any, Any], Any]


def send_now(coro: Coroutine[Any, Any, Any]) -> Pending | None:
    """Run `coro` until it finishes (None) or first waits (the pending send). Its exceptions
    propagate to the caller."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return coro, waiting_on


async def finish(pending: Pending) -> None:
    """Drive a pending send to its end from a task."""
    coro, waiting_on = pending
    try:
        while True:
            if isinstance(waiting_on, asyncio.Future):
                # Wait for it without taking its result: the coroutine reads that when resumed.
                await asyncio.wait((waiting_on,))
            else:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                return
    except asyncio.CancelledError:
        # Cancel the send too, so that its own handlers run: a lock it was waiting for passes
        # on to the next waiter instead of staying promised to a coroutine nobody drives.
        try:
            coro.throw(asyncio.CancelledError())
        except BaseException:
            pass
        else:
            coro.close()
        raise
