"""What every demo script shares: it outlasts a server that goes away for a while.

A demo runs against a server someone may restart at any moment. Each write is tried until the
server answers it; while it does not, the script says so once, on one line, waits (with the
client's jittered backoff) and says so again when the server is back. A write whose answer was
lost may have committed: each demo's writes are ones that may be made twice (a value set, or a
write with `If-Match` that the second time is refused).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from watchroute.client import APIError, ConnectionFailed
from watchroute.client.backoff import Backoff

P = ParamSpec("P")
T = TypeVar("T")


class Persistent:
    """Runs writes until they get an answer; `away` says whether the server is unreachable now."""

    def __init__(self, maximum_wait: float = 5.0) -> None:
        self.backoff = Backoff(initial=0.5, maximum=maximum_wait)
        self.away = False

    def __call__(self, write: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        while True:
            try:
                result = write(*args, **kwargs)
            except (ConnectionFailed, APIError) as exc:
                # A refusal that means "no" is the demo's to handle; one that means "later" is not.
                if isinstance(exc, APIError) and not exc.retriable:
                    raise
                if not self.away:
                    self.away = True
                    print(f"server unreachable ({_first_line(exc)}); retrying", file=sys.stderr, flush=True)
                time.sleep(self.backoff.next_delay(getattr(exc, "retry_after", 0.0)))
                continue
            if self.away:
                self.away = False
                print("server is back; carrying on", file=sys.stderr, flush=True)
            self.backoff.reset()
            return result


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
