"""The identity of one multiplexed WebSocket (`/v1/_watch`), refreshed without reconnecting.

`{"op": "auth", "token": "..."}` replaces the connection's identity. Every subscription is then
checked again under the new one: one whose grant is gone, or whose rule now reads differently
(the new claims would show another set of documents), ends with an ERROR (403) and the client
subscribes again; every other one runs on until the new credential's expiry.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..problems import Problem, bad_request
from ..watcher import Watcher
from .guarded import GuardedWatcher
from .identity import Identity
from .policy import Security, rule_text
from .refusals import forbidden


class WatchSession:
    def __init__(self, security: Security, identity: Identity | None, address: str | None) -> None:
        self.security = security
        self.identity = identity
        self.address = address
        self._watchers: dict[str, Watcher] = {}

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
        for sub, watcher in list(self._watchers.items()):
            if not isinstance(watcher, GuardedWatcher) or watcher.ended:
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
