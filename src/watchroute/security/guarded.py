"""Watchers that carry their caller's permissions for as long as they run.

A watch outlives the request that opened it, so what was checked at the door must keep holding:
- the credential expires: at `expires_at` the watcher's next read raises 401 `TokenExpired`,
  which every transport already turns into an ERROR event that ends the stream;
- the permission is withdrawn (a WebSocket refreshed its token and lost the grant): `revoke`
  makes the next read raise that refusal, ending that watch alone;
- a per-document rule hides a document's new state: the watcher's filter is the rule ANDed with
  the caller's, so the document leaves its membership as DELETED, and that DELETED carries the
  last state the caller could see (WITHDRAWN), never the new, hidden one.
Each also holds a slot of the concurrent-watch caps until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from watchroute.core.change import DELETED, WITHDRAWN, Change
from watchroute.core.problems import Problem
from watchroute.core.watcher import Watcher
from watchroute.security.refusals import token_expired
from watchroute.store.base import Row


class GuardedWatcher(Watcher):
    __slots__ = ("_expiry", "_problem", "_release", "_waiting", "ended", "expires_at", "rule_text")

    def __init__(
        self,
        *args: Any,
        expires_at: float | None,
        release: Callable[[], None] | None,
        rule_text: str | None,
    ) -> None:
        super().__init__(*args)
        self.expires_at: float | None = None
        self.rule_text = rule_text  # the rule as expanded for the caller: a refresh compares it
        self._release = release
        self._problem: Problem | None = None
        self._waiting = False
        self.ended = False
        self._expiry: asyncio.TimerHandle | None = None
        self.extend(expires_at)

    # -- the credential's lifetime -----------------------------------------------------------

    def extend(self, expires_at: float | None) -> None:
        """Run until `expires_at` (Unix time; None: no end): a refreshed token moves it."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.expires_at = expires_at
        if expires_at is not None:
            delay = max(0.0, expires_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, self.revoke, token_expired())

    def revoke(self, problem: Problem) -> None:
        """End this watch with `problem` as its ERROR event."""
        if self._problem is not None:
            return
        self._problem = problem
        self.withdraw()  # nothing more goes out from a commit
        if self._waiting:
            # Parked inside next(): closing is what makes it return; next() then raises.
            self.close()

    async def initial_page(self) -> list[Row]:
        # A credential that has lapsed or lost its grant reads no more of the state either.
        if self._problem is not None:
            raise self._problem
        rows = await super().initial_page()
        if self._problem is not None:
            raise self._problem
        return rows

    async def next(self, limit: int, timeout: float) -> list[tuple[str, Change]]:
        if self._problem is not None:
            raise self._problem
        self._waiting = True
        try:
            events = await super().next(limit, timeout)
        finally:
            self._waiting = False
        if self._problem is not None:
            # Whatever was read after the deadline is dropped; the client resumes from what it got.
            raise self._problem
        return events

    # -- the slot ------------------------------------------------------------------------------

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._end()

    def __del__(self) -> None:
        # A watcher opened but never entered: its response never ran (the client left first).
        with contextlib.suppress(Exception):
            self._end()
            self.end_initial()

    def _end(self) -> None:
        self.ended = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        release, self._release = self._release, None
        if release is not None:
            release()


class RuleWatcher(GuardedWatcher):
    """A guarded watcher whose collection has a per-document rule (`rule`)."""

    __slots__ = ("rule",)

    def __init__(self, *args: Any, rule: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rule = rule

    def classify(self, change: Change) -> str | None:
        kind = super().classify(change)
        if kind == DELETED and change.type != DELETED and not self.rule.matches(change.data):
            return WITHDRAWN
        return kind
