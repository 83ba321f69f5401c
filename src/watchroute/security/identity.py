"""Who is asking: resolved once per request (or WebSocket) and kept in the ASGI scope.

An `Identity` is immutable. The middleware resolves it from the request's credential, stores it
in `scope["state"]["identity"]` (so `request.state.identity`), and every route, and every watch
opened for the request, asks it what it may do. A WebSocket that refreshes its token gets a new
Identity; nothing already opened sees its old one change under it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

ALL_SCOPES = frozenset({"read:*", "write:*", "watch:*", "schema:*", "bridges:*"})


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    scopes: frozenset[str]
    claims: dict[str, Any] = field(default_factory=dict, compare=False)
    # Unix time after which the credential is no longer accepted (leeway included); None: never.
    expires_at: float | None = None
    method: str = "none"  # "none" | "apikey" | "jwt"
    authenticated: bool = True
    address: str | None = None  # the client's IP address, for per-address limits
    # How the credential arrived ("header", "query", "cookie"); a cookie is ambient authority,
    # which browsers send on cross-site requests too, so Origin checks apply to it.
    source: str | None = None

    @property
    def key(self) -> str | None:
        """The name limits are counted under; None for the anonymous (counted by address)."""
        if self.method == "none" or not self.authenticated:
            return None
        return f"{self.method}:{self.subject}"

    def at(self, address: str | None, source: str | None = None) -> Identity:
        # Every request makes one: the constructor costs a third of dataclasses.replace.
        return Identity(
            subject=self.subject,
            scopes=self.scopes,
            claims=self.claims,
            expires_at=self.expires_at,
            method=self.method,
            authenticated=self.authenticated,
            address=address,
            source=source,
        )

    def seconds_left(self, now: float) -> float:
        return math.inf if self.expires_at is None else self.expires_at - now


# auth=none: every request may do everything (rules still apply, with no claims to substitute).
ANONYMOUS = Identity("anonymous", ALL_SCOPES, {}, None, "none")
# A `/v1/_watch` connection that has not authenticated yet: it may only send {"op": "auth"}.
UNAUTHENTICATED = Identity("", frozenset(), {}, None, "none", authenticated=False)


def identity_of(conn: HTTPConnection) -> Identity | None:
    """The identity the middleware resolved for this request or WebSocket, if any."""
    state = conn.scope.get("state")
    return None if state is None else state.get("identity")
