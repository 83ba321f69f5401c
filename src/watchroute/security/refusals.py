"""The problem details of a refusal: 401, 403 and 429, the same from a route or a stream.

A refusal's detail tells the client what to fix, never what a secret was; the audit log
(audit.py) records who and why on the server's side.
"""

from __future__ import annotations

import math

from watchroute.core.problems import Problem

REALM = 'Bearer realm="watchroute"'


class TokenError(Exception):
    """Why a credential is refused, for the audit log; the client gets `problem`."""

    def __init__(self, problem: Problem, why: str) -> None:
        super().__init__(why)
        self.problem = problem
        self.why = why


def unauthorized(detail: str, reason: str = "Unauthorized") -> Problem:
    # RFC 6750 3: a missing credential gets the bare challenge, a bad one error="invalid_token".
    challenge = REALM if detail.startswith("missing") else REALM + ', error="invalid_token"'
    return Problem(401, reason, detail, headers={"WWW-Authenticate": challenge})


def token_expired() -> Problem:
    return unauthorized("the token has expired; authenticate again", "TokenExpired")


def key_revoked() -> Problem:
    return unauthorized("the API key was revoked or has expired", "KeyRevoked")


def auth_timeout(seconds: float) -> Problem:
    return unauthorized(
        f'missing credentials: send {{"op": "auth", "token": ...}} within {seconds:g} s of connecting',
        "AuthTimeout",
    )


def forbidden(detail: str, reason: str = "Forbidden") -> Problem:
    return Problem(403, reason, detail)


def rate_limited(detail: str, retry_after: float) -> Problem:
    seconds = max(1, math.ceil(retry_after))
    return Problem(429, "RateLimited", detail, headers={"Retry-After": str(seconds)}, retry_after=seconds)
