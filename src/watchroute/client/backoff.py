"""Reconnect delays: exponential backoff with full jitter, capped, under any server hint.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the reconnects of
many clients that lost the same server at the same moment, instead of bringing them back in
waves (AWS Architecture Blog, "Exponential Backoff And Jitter"). A server hint (SSE `retry:`,
`Retry-After`) is a floor: the client never comes back sooner than it was asked to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.25  # the ceiling of the first delay, in seconds
    maximum: float = 30.0  # the ceiling never grows past this
    multiplier: float = 2.0
    attempt: int = 0  # failures since the last success
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def ceiling(self) -> float:
        return min(self.maximum, self.initial * self.multiplier ** min(self.attempt, 64))

    def next_delay(self, floor: float = 0.0) -> float:
        """The delay before the next attempt; counts the attempt."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return max(floor, delay)

    def reset(self) -> None:
        """A connection worked: the next failure starts from the first delay again."""
        self.attempt = 0
