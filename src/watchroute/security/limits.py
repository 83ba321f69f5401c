"""Limits: token buckets for requests and for opening watches, and caps on concurrent watches.

A rate is written `N/PERIOD` (`20/s`, `600/m`, `100/10s`): a bucket holds N tokens and refills
at N per PERIOD, so a client may burst N at once and then keeps to the average. Buckets live in
this process, or in Redis when `redis_url` is set, so that every instance behind a balancer
counts against the same bucket (the worker processes of one `serve --workers N` share theirs
without Redis: shared_limits.py). If Redis stops answering, this instance counts alone (logged
once) rather than refusing everyone: a limiter must not become the outage.

Concurrent watches are counted here per instance (`WatchCounts`, summed over its worker
processes by shared_limits.py); with `redis_url`, every
instance also holds a lease in Redis for each of its watches (leases.py), so that the caps hold
for all instances together, and falls back to its own count when Redis does not answer.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("watchroute")

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(s|m|h)?\s*")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# Buckets that are full again are forgotten (a full bucket is the same as no bucket), checked
# whenever this many have been added since the last sweep.
SWEEP_EVERY = 4096


@dataclass(frozen=True, slots=True)
class Rate:
    capacity: float
    per_second: float

    def __str__(self) -> str:
        return f"{self.capacity:g} per {self.capacity / self.per_second:g}s"


def parse_rate(text: str) -> Rate | None:
    """`N/PERIOD` as a Rate; "" or "0" is no limit. Raises ValueError when malformed."""
    if not text.strip() or text.strip() == "0":
        return None
    m = _RATE.fullmatch(text)
    if m is None:
        raise ValueError(f"a rate is N/PERIOD like 20/s, 600/m or 100/10s, not {text!r}")
    count, amount, unit = int(m.group(1)), m.group(2), m.group(3)
    if amount and unit is None:
        unit = "s"
    period = (float(amount) if amount else 1.0) * _UNITS[unit]
    if count <= 0 or period <= 0:
        raise ValueError(f"a rate needs a positive count and period, not {text!r}")
    return Rate(float(count), count / period)


def take_token(tokens: float, at: float, now: float, rate: Rate) -> tuple[float, float]:
    """A bucket that held `tokens` at `at`, refilled to `now`, after taking one if there is one:
    (tokens left, 0.0), or (tokens, the seconds until one is there)."""
    tokens = min(rate.capacity, tokens + (now - at) * rate.per_second)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate.per_second


class LocalBuckets:
    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}
        self._added = 0

    def take(self, key: str, rate: Rate) -> float:
        """Take a token: 0.0 when allowed, else the seconds until one is there."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [rate.capacity, now]
            self._added += 1
            if self._added >= SWEEP_EVERY:
                self._sweep(now, rate)
        bucket[0], wait = take_token(bucket[0], bucket[1], now, rate)
        bucket[1] = now
        return wait

    def _sweep(self, now: float, rate: Rate) -> None:
        self._added = 0
        full_after = rate.capacity / rate.per_second
        for key in [k for k, (_, at) in self._buckets.items() if now - at >= full_after]:
            del self._buckets[key]


# One round trip: refill, take, and remember, atomically; Redis's clock is every instance's.
TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or capacity
local at = tonumber(b[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return tostring(wait)
"""


def redis_client(url: str) -> Any:
    """The one client an instance's shared limits use: short timeouts, since every admission
    waits for it, and a limiter that cannot ask Redis quickly counts alone instead."""
    import redis.asyncio as redis

    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


class RedisBuckets:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix + "rate:"
        self.script = self.client.register_script(TAKE_SCRIPT)
        self.local = LocalBuckets()
        self._failing = False

    async def take(self, key: str, rate: Rate) -> float:
        try:
            wait = float(await self.script(keys=[self.prefix + key], args=[rate.capacity, rate.per_second]))
        except Exception as exc:
            if not self._failing:
                log.warning("rate limits: Redis does not answer (%s); counting on this instance", exc)
                self._failing = True
            return self.local.take(key, rate)
        if self._failing:
            log.warning("rate limits: Redis answers again; counting across instances")
            self._failing = False
        return wait


class WatchCounts:
    """Concurrent watches on this instance, in total and per identity (shared caps: leases.py)."""

    def __init__(self, max_total: int, max_per_identity: int) -> None:
        self.max_total = max_total or math.inf
        self.max_per_identity = max_per_identity or math.inf
        self.total = 0
        self.by_identity: defaultdict[str, int] = defaultdict(int)

    @property
    def enabled(self) -> bool:
        return self.max_total != math.inf or self.max_per_identity != math.inf

    def refusal(self, key: str | None) -> str | None:
        """Why one more watch is refused, or None."""
        if self.total >= self.max_total:
            return self.total_full()
        if key is not None and self.by_identity[key] >= self.max_per_identity:
            return self.identity_full()
        return None

    def total_full(self) -> str:
        return f"the service holds its most concurrent watches ({self.max_total})"

    def identity_full(self) -> str:
        return f"an identity may hold at most {self.max_per_identity} concurrent watches"

    def try_add(self, key: str | None) -> str | None:
        """Count one more watch of `key` unless the caps refuse it; why they do, or None."""
        why = self.refusal(key)
        if why is None:
            self.add(key)
        return why

    def add(self, key: str | None) -> None:
        self.total += 1
        if key is not None:
            self.by_identity[key] += 1

    def remove(self, key: str | None) -> None:
        self.total -= 1
        if key is not None:
            left = self.by_identity[key] - 1
            if left > 0:
                self.by_identity[key] = left
            else:
                del self.by_identity[key]
