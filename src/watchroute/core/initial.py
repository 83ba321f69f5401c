"""The initial state of a watch (`initial=true`): a phase of its watcher, before the live one.

The matching resources go out as they were at one revision R, the revision of a read snapshot
of the store taken when the watch opened (store/sqlite/snapshot.py); the watcher's cursor starts
at R, so the live phase then delivers every change after R once. The snapshot is read a page at
a time, and a transport asks for the next page only once its connection has taken the last one:
a watch whose client does not read holds one page and the socket's buffers, not the collection.

The snapshot keeps SQLite from checkpointing past it, so it is held for at most `seconds`: a
watch whose initial state has not gone out by then ends with 410 `Expired` (its client lists
again, as after any 410), and the snapshot is let go at that moment even if the connection is
still stuck on a write. Ending the watch lets it go too (`close`, from the watcher's exit).

Each snapshot holds a database connection, and with it a file descriptor, so an instance sends
at most `max_initial_states` initial states at once (`InitialStates`): a watch waits a moment
for a place, then gets 503 `TooManyInitialStates`. Without the cap, watches that never read
could take every descriptor the store keeps in reserve for its own files.
"""

from __future__ import annotations

import asyncio

from watchroute.core.filter import Filter
from watchroute.core.problems import Problem
from watchroute.store.base import Row, Snapshot

# How long a watch waits for a place among the initial states being sent before it gets 503.
PLACE_WAIT_SECONDS = 5.0


class InitialStates:
    """The places for initial states being sent at once on this instance."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._places = asyncio.Semaphore(limit)

    async def take(self) -> None:
        """A place, waited for up to PLACE_WAIT_SECONDS; raises Problem(503) when none frees."""
        try:
            async with asyncio.timeout(PLACE_WAIT_SECONDS):
                await self._places.acquire()
        except TimeoutError:
            raise Problem(
                503,
                "TooManyInitialStates",
                f"{self.limit} initial states are being sent already; try again in a moment",
                headers={"Retry-After": "1"},
            ) from None

    def give_back(self) -> None:
        self._places.release()


class InitialState:
    __slots__ = (
        "_expiry",
        "_place",
        "_snapshot",
        "expired",
        "filter",
        "max_bytes",
        "max_rows",
        "revision",
        "seconds",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        place: InitialStates | None,
        flt: Filter | None,
        max_rows: int,
        max_bytes: int,
        seconds: float,
    ) -> None:
        """Owns `snapshot` and the place taken for it in `place` from now on."""
        self._snapshot = snapshot
        self._place = place
        self.revision = snapshot.revision
        self.filter = flt  # the watcher's: the caller's filter with its rule ANDed in
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.expired = False
        self._expiry: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            seconds, self._expire
        )

    async def page(self) -> list[Row]:
        """The next page, in id order; [] once every matching resource has been read (the
        snapshot is then let go). Raises Problem(410) once the snapshot has expired."""
        rows: list[Row] = []
        if not self.expired:
            rows = await self._snapshot.page(self.filter, self.max_rows, self.max_bytes)
        if self.expired:
            raise Problem(
                410,
                "Expired",
                f"the initial state did not go out within {self.seconds:g} s (the connection took "
                "it too slowly); list again, or watch with initial=true again",
            )
        if not rows:
            self.close()
        return rows

    def _expire(self) -> None:
        self._expiry = None
        self.expired = True
        self._let_go()

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._let_go()

    def _let_go(self) -> None:
        self._snapshot.close()
        place, self._place = self._place, None
        if place is not None:
            place.give_back()
