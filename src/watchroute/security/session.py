"""The credential of one multiplexed WebSocket (`/v1/_watch`), for as long as the socket is open.

A connection outlives the handshake that checked its credential, so the session keeps asking:
- at every `subscribe`, before anything is read for it: an expired credential, or an API key
  that no longer stands in the store (looked up there, not in the cache: a key revoked a moment
  ago must read nothing more), ends the connection;
- while it is open: at the credential's expiry, when its API key is revoked (the key checks of
  `apikeys.KeyWatches` cover sessions as they cover watches), or when a connection that came
  without a credential has not sent one within `ws_auth_timeout`, the session tells the
  connection, which sends an ERROR and closes with 4401.

`{"op": "auth", "token": "..."}` replaces the connection's identity. Every subscription is then
checked again under the new one: one whose grant is gone, or whose rule now reads differently
(the new claims would show another set of documents), ends with an ERROR (403) and the client
subscribes again; every other one runs on until the new credential's expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from watchroute.core.problems import Problem, bad_request
from watchroute.core.watcher import Watcher
from watchroute.security.guarded import GuardedWatcher
from watchroute.security.identity import Identity
from watchroute.security.policy import Security, rule_text
from watchroute.security.refusals import auth_timeout, forbidden, key_revoked, token_expired

log = logging.getLogger("watchroute")

# What the connection does when its credential no longer stands: ERROR, then close.
OnLapse = Callable[[Problem], None]


class WatchSession:
    def __init__(
        self, security: Security, identity: Identity | None, address: str | None, auth_timeout: float = 0.0
    ) -> None:
        self.security = security
        self.identity = identity
        self.address = address
        self.auth_timeout = auth_timeout
        self._watchers: dict[str, GuardedWatcher] = {}  # what `track` kept: guarded ones only
        self._on_lapse: OnLapse | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._untrack: Callable[[], None] | None = None

    # -- the credential's life -----------------------------------------------------------------

    def start(self, on_lapse: OnLapse) -> None:
        """Follow the credential from now on: `on_lapse(problem)` once it no longer stands."""
        self._on_lapse = on_lapse
        self._follow(self.identity)

    def stop(self) -> None:
        self._on_lapse = None
        self._unfollow()

    def revoke(self, problem: Problem) -> None:
        """The credential no longer stands (its key was revoked: `KeyWatches` calls this)."""
        on_lapse, self._on_lapse = self._on_lapse, None
        self._unfollow()
        if on_lapse is not None:
            on_lapse(problem)

    def _follow(self, identity: Identity | None) -> None:
        self._unfollow()
        loop = asyncio.get_running_loop()
        if identity is None or not identity.authenticated:
            # Holding a socket without a credential costs the server and proves nothing.
            if self.security.mode != "none" and self.auth_timeout:
                self._deadline = loop.call_later(
                    self.auth_timeout, self.revoke, auth_timeout(self.auth_timeout)
                )
            return
        if identity.expires_at is not None:
            delay = max(0.0, identity.expires_at - time.time())
            self._deadline = loop.call_later(delay, self.revoke, token_expired())
        key_watches = self.security.key_watches
        if key_watches is not None and identity.method == "apikey":
            self._untrack = key_watches.add(identity.claims["key_id"], self)

    def _unfollow(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        untrack, self._untrack = self._untrack, None
        if untrack is not None:
            untrack()

    async def lapsed(self) -> Problem | None:
        """Why the connection's credential no longer stands, or None. Asked at every subscribe.

        A connection without a credential has none to lapse: its subscribe is refused (401) by
        the grant check and the connection stays, to authenticate."""
        identity = self.identity
        if identity is None or not identity.authenticated or identity.method == "none":
            return None
        if identity.expires_at is not None and identity.expires_at <= time.time():
            return token_expired()
        apikeys = self.security.apikeys
        if apikeys is not None and identity.method == "apikey":
            key_id = identity.claims["key_id"]
            try:
                gone = await asyncio.to_thread(apikeys.store.withdrawn, [key_id])
            except Exception:
                log.exception("cannot check the API key of a subscription")
                raise Problem(
                    503, "KeysUnavailable", "the API key cannot be checked now; try again"
                ) from None
            if gone:
                return key_revoked()
        return None

    # -- subscriptions -------------------------------------------------------------------------

    def track(self, sub: Any, watcher: Watcher) -> None:
        if isinstance(sub, str) and isinstance(watcher, GuardedWatcher):
            # Forget ended subscriptions as new ones come: a client cycling `sub` names must
            # not grow this without bound.
            self._watchers = {s: w for s, w in self._watchers.items() if not w.ended}
            self._watchers[sub] = watcher

    async def refresh(self, op: dict[str, Any]) -> bytes:
        """Answer an `auth` op: AUTHENTICATED, or raise 401 (the old identity stays)."""
        token = op.get("token")
        if not isinstance(token, str) or not token:
            raise bad_request("BadMessage", 'auth needs "token": the new credential')
        identity = await self.security.authenticate(token, self.address, "message", "WS /v1/_watch")
        self.identity = identity
        if self._on_lapse is not None:
            self._follow(identity)
        for sub, watcher in list(self._watchers.items()):
            if watcher.ended:
                del self._watchers[sub]
                continue
            try:
                rule = self.security.authorize(identity, "watch", watcher.collection)
            except Problem as problem:
                watcher.revoke(problem)
                continue
            if rule_text(rule) != watcher.rule_text:
                watcher.revoke(
                    forbidden(
                        "the new credential sees this collection through another rule; subscribe again",
                        "PermissionsChanged",
                    )
                )
                continue
            watcher.extend(identity.expires_at)
        return orjson.dumps(
            {"type": "AUTHENTICATED", "subject": identity.subject, "expires_at": identity.expires_at}
        )
