"""Reading pages in a real browser: waiting for what a page shows, counting its watches."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def lists(page: Any) -> int:
    """How many watches the server answered with the whole state: asked with `initial=true` and
    not resuming with `Last-Event-ID`, as EventSource does on its own when it reconnects.
    (Attempts that found no server are left out: they were never answered.)"""
    return sum(
        1
        for request in page.sent
        if "initial=true" in request.url
        and request.response() is not None
        and "last-event-id" not in request.all_headers()
    )
