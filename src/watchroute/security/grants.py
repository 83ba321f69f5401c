"""Grants: which actions an identity may take on which collections.

A grant is `ACTION:COLLECTION` with ACTION one of read, write, watch, and `*` in COLLECTION
matching any run of characters (`write:chat-*`, `watch:*`). `bypass:COLLECTION` exempts from
the collection's per-document rule: for the trusted service that writes everyone's documents.
`schema:COLLECTION` sets and removes the collection's schema (`/v1/_schemas/COLLECTION`): it
decides what every writer of the collection may write, so no `write` grant implies it.
`bridges:NAME` sets, reads and removes the bridge NAME (`/v1/_bridges/NAME`, docs/bridges.md): a
bridge writes to and reads from collections on its own, so no other grant implies it.
They come from a JWT's standard `scope` claim (space-separated, RFC 8693) or `scp` (a list, as
some issuers send it), or from an API key's scopes. The three actions are independent: `watch`
does not imply `read`, because a watch that only shows what changes is a different promise from
a readable collection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

ACTIONS = ("read", "write", "watch", "bypass", "schema", "bridges")
_GRANT = re.compile(r"(read|write|watch|bypass|schema|bridges):([a-z0-9_*-]{1,63})")
# Not a grant on a collection: reading /metrics when authentication is on (the revision, the
# watcher counts and the refusals say something about every collection at once).
METRICS_SCOPE = "metrics"


def is_grant(scope: str) -> bool:
    return scope == METRICS_SCOPE or _GRANT.fullmatch(scope) is not None


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """The scopes a token carries; unknown scopes are kept (they grant nothing here)."""
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.extend(value.split())
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, str))
    return frozenset(found)


@lru_cache(maxsize=4096)
def _pattern(collections: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in collections.split("*")))


def collection_matches(pattern: str, collection: str) -> bool:
    if "*" not in pattern:
        return pattern == collection
    return _pattern(pattern).fullmatch(collection) is not None


def allows(scopes: Iterable[str], action: str, collection: str) -> bool:
    if isinstance(scopes, frozenset):  # an Identity's: asked on every request, answered once
        return _allows_cached(scopes, action, collection)
    return _allows(scopes, action, collection)


def _allows(scopes: Iterable[str], action: str, collection: str) -> bool:
    prefix = action + ":"
    return any(s.startswith(prefix) and collection_matches(s[len(prefix) :], collection) for s in scopes)


_allows_cached = lru_cache(maxsize=4096)(_allows)
