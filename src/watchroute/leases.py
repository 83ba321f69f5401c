"""TTL leases: a resource written with a ttl lapses, and the sweep deletes it as a change.

A write's `ttl` (seconds) gives the resource an expiry, stored with it (`expires_at`) and counted
from the write's commit; a later write renews it, or without a ttl makes the resource permanent.
Reads leave a lapsed lease out at once. The sweep, every `lease_sweep_interval`, reads the leases
lapsed by then from an index of expiries (a range read: its cost does not grow with the number
of live leases) and deletes each through the ordinary write path, on a revision of its own with
its log entry, so every watcher sees the DELETED (marked `expired`) and resume stays exact.

Each delete is guarded by the expiry it was read with (`WriteOp.lapsed_at`): a renewal that
commits first wins, and of several sweepers (processes on one SQLite file, instances on one
PostgreSQL database) only the first delete of a lease commits; the others find it gone. A lease
that lapsed while no server ran is deleted by the first sweep after the start.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from watchroute.core.problems import Problem, bad_request
from watchroute.store import Store, WriteOp

log = logging.getLogger("watchroute")

MIN_TTL_SECONDS = 1.0
# Lapsed leases deleted per round of a pass: each is a job of its own, group-committed together.
SWEEP_BATCH = 1000


def parse_ttl(raw: Any, max_ttl: float, where: str = "ttl") -> float:
    """A write's ttl in seconds, from a query parameter's text or a batch op's number."""
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        value = math.nan
    if not math.isfinite(value) or not MIN_TTL_SECONDS <= value <= max_ttl:
        raise bad_request(
            "BadTTL",
            f"{where} must be a number of seconds from {MIN_TTL_SECONDS:g} to {max_ttl:g} (max_ttl_seconds)",
        )
    return value


class Sweeper:
    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.deleted = 0  # lapsed leases this instance has deleted

    async def run_forever(self) -> None:
        failing = False
        while True:
            try:
                await self.sweep()
                failing = False
            except Exception as exc:  # a failed pass is retried on the next one
                if not failing:  # once per outage, not twice a second
                    # A store that refuses (503: the database out of reach, its file gone) says
                    # why in its message; anything else is a fault to see whole.
                    log.warning(
                        "sweeping lapsed leases failed (%s); retrying",
                        exc,
                        exc_info=not isinstance(exc, Problem),
                    )
                failing = True
            await asyncio.sleep(self.interval)

    async def sweep(self) -> int:
        """Delete every lease lapsed by now; return how many deletes this pass committed."""
        store = self.store
        deleted = 0
        async with store.sweep_turn() as mine:
            if not mine:
                return 0
            while True:
                lapsed = await store.lapsed(time.time(), SWEEP_BATCH)
                if not lapsed:
                    break
                outcomes = await asyncio.gather(
                    *(
                        store.write([WriteOp("delete", collection, id, lapsed_at=expires_at)])
                        for collection, id, expires_at in lapsed
                    ),
                    return_exceptions=True,
                )
                done = sum(1 for outcome in outcomes if isinstance(outcome, list))
                for outcome in outcomes:
                    # Renewed meanwhile, or deleted by another sweeper: as it should be.
                    if isinstance(outcome, BaseException) and not (
                        isinstance(outcome, Problem) and outcome.reason == "LeaseRenewed"
                    ):
                        raise outcome
                deleted += done
                if len(lapsed) < SWEEP_BATCH or not done:
                    break
        self.deleted += deleted
        return deleted
