"""Caps on concurrent watches shared by every instance, through leases kept in Redis.

A count kept in Redis would have to be decremented by the instance that incremented it, so a
crashed instance's watches would count forever. A lease does not need its holder to end it:
each open watch holds one member of a sorted set per cap (every watch's, its identity's),
scored with the moment it lapses on Redis's clock. Taking a lease prunes the lapsed members,
counts the rest and adds the new one in one script, so N instances together hold at most the
cap. The instance renews all its leases in one batch every third of the lease time and removes
a lease as soon as its watch ends; a take waits for the removals under way, so a client that
closes a watch and opens another on the same instance finds its place free. An instance that
vanished stops counting after the lease time, and one that stops cleanly removes its leases at
once.

Every instance also counts its own watches (`WatchCounts`): if Redis stops answering, it admits
against that count alone (logged once) rather than refusing everyone, as the rate limits do.
Its leases are renewed with a plain ZADD, so watches admitted while Redis was away, and leases
that lapsed meanwhile, are counted again as soon as it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections import defaultdict
from typing import Any

from watchroute.security.limits import WatchCounts

log = logging.getLogger("watchroute")

# Long enough that a renewal or two may be lost to a slow Redis without a watch ceasing to
# count; short enough that a crashed instance's watches free their identities' caps soon.
LEASE_SECONDS = 10.0
# Members renewed per script call: one call holds Redis for its whole length.
RENEW_CHUNK = 1000

# KEYS: the sets the new watch counts in; ARGV: member, lease in ms, then each set's cap.
# Returns 0 with the lease taken, or the 1-based index of the set that is full.
TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then return i end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[1])
  redis.call('PEXPIRE', key, lease + 1000)
end
return 0
"""

# KEYS[i] holds member ARGV[i + 1]; ARGV[1] is the lease in ms. Plain ZADD: a lease that lapsed
# while Redis was away is taken again, since its watch is still open.
RENEW_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local seen = {}
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  if not seen[key] then
    seen[key] = true
    redis.call('PEXPIRE', key, lease + 1000)
  end
end
return 0
"""


class CapReached(Exception):
    """One more watch would exceed a cap; the message says which."""


class Lease:
    """One watch's place under the caps, given back by `release` (or when it is forgotten)."""

    __slots__ = ("_leases", "identity_key", "member")

    def __init__(self, leases: WatchLeases, member: str, identity_key: str | None) -> None:
        self._leases: WatchLeases | None = leases
        self.member = member
        self.identity_key = identity_key

    def release(self) -> None:
        leases, self._leases = self._leases, None
        if leases is not None:
            leases.end(self)

    def __del__(self) -> None:
        # An admission whose watch never started (the request failed after the door).
        with contextlib.suppress(Exception):
            self.release()


class WatchLeases:
    """This instance's leases: taken at the door, renewed in batches, removed as watches end."""

    def __init__(
        self, client: Any, prefix: str, counts: WatchCounts, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self.client = client
        self.prefix = prefix + "watches:"
        self.counts = counts
        self.lease_ms = max(1, round(lease_seconds * 1000))
        self.renew_every = lease_seconds / 3
        self.take_script = client.register_script(TAKE_SCRIPT)
        self.renew_script = client.register_script(RENEW_SCRIPT)
        self.instance = uuid.uuid4().hex[:12]
        self._numbers = itertools.count()
        # The leases this instance holds: member -> the sets it is in. Strings only: a Lease
        # must stay collectable for its __del__ to give it back.
        self._held: dict[str, tuple[str, ...]] = {}
        self._ending: list[tuple[str, tuple[str, ...]]] = []
        # Leases ended so far, and how many of them the keeper has taken out of Redis (or given
        # up on, leaving them to lapse): a take waits for the two to meet (`_after_removals`).
        self._ended = 0
        self._removed = 0
        self._removals: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._failing = False

    def _sets(self, identity_key: str | None) -> list[tuple[str, float]]:
        """The sets a watch of `identity_key` counts in, with their caps."""
        sets = []
        if self.counts.max_total != math.inf:
            sets.append((self.prefix + "total", self.counts.max_total))
        if identity_key is not None and self.counts.max_per_identity != math.inf:
            sets.append((self.prefix + "identity:" + identity_key, self.counts.max_per_identity))
        return sets

    async def take(self, identity_key: str | None) -> Lease:
        """A lease for one more watch of `identity_key`; raises CapReached when a cap is full."""
        member = f"{self.instance}:{next(self._numbers)}"
        sets = self._sets(identity_key)
        if sets:
            await self._after_removals()
            caps = [int(cap) for _, cap in sets]
            try:
                full = int(
                    await self.take_script(keys=[k for k, _ in sets], args=[member, self.lease_ms, *caps])
                )
            except Exception as exc:
                self._failed(exc)
                why = self.counts.refusal(identity_key)
                if why is not None:
                    raise CapReached(why) from None
            else:
                self._answered()
                if full:
                    total = sets[full - 1][0] == self.prefix + "total"
                    raise CapReached(self.counts.total_full() if total else self.counts.identity_full())
        self.counts.add(identity_key)
        self._held[member] = tuple(k for k, _ in sets)
        return Lease(self, member, identity_key)

    def end(self, lease: Lease) -> None:
        """Give `lease` back: at once here, and in Redis by the keeper's next round trip."""
        self.counts.remove(lease.identity_key)
        sets = self._held.pop(lease.member, ())
        if sets:
            self._ending.append((lease.member, sets))
            self._ended += 1
            if self._wake is not None:
                self._wake.set()

    # -- the keeper: removals as they come, renewals every third of the lease time ------------

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._removals = asyncio.Condition()
        self._keeper = asyncio.create_task(self._keep(), name="watchroute-watch-leases")

    async def close(self) -> None:
        """Stop renewing, and remove every lease this instance still holds."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        self._ending.extend(self._held.items())
        self._held.clear()
        await self._remove()

    async def _keep(self) -> None:
        assert self._wake is not None
        renew_at = time.monotonic() + self.renew_every
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that
            # comes as the event is set, and close() would wait for this task for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, renew_at - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            # One task does both, in order: a renewal never puts back a lease removed after it.
            await self._remove()
            if time.monotonic() >= renew_at:
                await self._renew()
                renew_at = time.monotonic() + self.renew_every

    async def _after_removals(self) -> None:
        """Wait until every lease ended so far has left Redis. A client that closes a watch and
        at once opens another on this instance must find the first one's place free: without
        this, the new lease's script could reach Redis ahead of the keeper's removal."""
        if self._removals is None or self._removed >= self._ended:
            return
        ended = self._ended
        async with self._removals:
            await self._removals.wait_for(lambda: self._removed >= ended)

    async def _remove(self) -> None:
        ending, self._ending = self._ending, []
        ended = self._ended
        if ending:
            await self._remove_from_redis(ending)
        if self._removals is not None:
            async with self._removals:
                self._removed = ended
                self._removals.notify_all()

    async def _remove_from_redis(self, ending: list[tuple[str, tuple[str, ...]]]) -> None:
        by_set: defaultdict[str, list[str]] = defaultdict(list)
        for member, sets in ending:
            for key in sets:
                by_set[key].append(member)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, members in by_set.items():
                    pipe.zrem(key, *members)
                await pipe.execute()
        except Exception as exc:
            self._failed(exc)  # not renewed any more: they lapse after the lease time
        else:
            self._answered()

    async def _renew(self) -> None:
        pairs = [(key, member) for member, sets in self._held.items() for key in sets]
        try:
            for start in range(0, len(pairs), RENEW_CHUNK):
                chunk = pairs[start : start + RENEW_CHUNK]
                members = [member for _, member in chunk]
                await self.renew_script(keys=[key for key, _ in chunk], args=[self.lease_ms, *members])
        except Exception as exc:
            self._failed(exc)
        else:
            if pairs:
                self._answered()

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("watch caps: Redis does not answer (%s); counting on this instance", exc)
            self._failing = True

    def _answered(self) -> None:
        if self._failing:
            log.warning("watch caps: Redis answers again; counting across instances")
            self._failing = False
