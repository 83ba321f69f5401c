"""API keys: created and revoked with `watchroute apikey`, stored hashed beside the data.

A key is `wr_<id>_<secret>`: `id` (public, 10 characters) names it in `list` and `revoke`, and
`secret` is 32 random bytes. Only SHA-256 of the whole key is stored. A fast hash is right here
where it would be wrong for passwords: a slow hash (bcrypt, argon2) exists to make guessing a
low-entropy password expensive, and nobody can guess 256 random bits, slowly or fast; a fast
hash keeps every request's check cheap. The stored digest is compared in constant time.

The keys live where the data goes, behind the store's seam (store.base.APIKeyTable): a table of
their own in the SQLite file (store/sqlite/apikeys.py) or in watchroute's PostgreSQL schema
(store/postgres/apikeys.py), so the CLI can manage them while the server runs.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchroute.security.identity import Identity
from watchroute.store import open_api_keys
from watchroute.store.base import StoredKey

log = logging.getLogger("watchroute")

PREFIX = "wr_"
ID_CHARS = "abcdefghijkmnopqrstuvwxyz23456789"  # no look-alikes: ids are read aloud and typed
CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class APIKey:
    id: str
    subject: str
    scopes: tuple[str, ...]
    name: str
    created: float
    expires: float | None
    revoked: float | None

    def identity(self) -> Identity:
        claims = {"sub": self.subject, "scope": " ".join(self.scopes), "key_id": self.id}
        return Identity(self.subject, frozenset(self.scopes), claims, self.expires, "apikey")


def api_key_store(database: str, postgres_schema: str = "watchroute") -> APIKeyStore:
    """The keys in the server's database: the SQLite file, or PostgreSQL's schema."""
    return APIKeyStore(database, postgres_schema)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def split_key(key: str) -> str | None:
    """The id of a well-formed key, else None."""
    if not key.startswith(PREFIX):
        return None
    id, sep, secret = key[len(PREFIX) :].partition("_")
    if not sep or len(id) != 10 or len(secret) < 32:
        return None
    return id


class APIKeyStore:
    """What a key is and how it is checked; where it is kept is the store's (APIKeyTable)."""

    def __init__(self, database: str, postgres_schema: str = "watchroute") -> None:
        self.table = open_api_keys(database, postgres_schema)

    def create(
        self, scopes: list[str], subject: str | None = None, name: str = "", expires: float | None = None
    ) -> tuple[APIKey, str]:
        """A new key; the key itself is returned once and never stored."""
        id = "".join(secrets.choice(ID_CHARS) for _ in range(10))
        key = f"{PREFIX}{id}_{secrets.token_urlsafe(32)}"
        record = APIKey(id, subject or f"key-{id}", tuple(scopes), name, time.time(), expires, None)
        self.table.insert(
            StoredKey(id, digest(key), record.subject, record.scopes, name, record.created, expires, None)
        )
        return record, key

    def revoke(self, id: str) -> bool:
        return self.table.revoke(id, time.time())

    def list(self) -> list[APIKey]:
        return [_record(stored) for stored in self.table.all()]

    def withdrawn(self, ids: builtins.list[str]) -> set[str]:
        """Those of `ids` that no longer stand: revoked, expired or deleted."""
        if not ids:
            return set()
        return set(ids) - self.table.standing(ids, time.time())

    def find(self, key: str) -> tuple[APIKey | None, str]:
        """The key's record if it is valid, else None and why (for the audit log)."""
        id = split_key(key)
        if id is None:
            return None, "malformed"
        stored = self.table.get(id)
        # The stored digest is compared in constant time.
        if stored is None or not hmac.compare_digest(stored.digest, digest(key)):
            return None, "unknown"
        record = _record(stored)
        if record.revoked is not None:
            return None, "revoked"
        if record.expires is not None and record.expires <= time.time():
            return None, "expired"
        return record, "ok"


def _record(stored: StoredKey) -> APIKey:
    return APIKey(
        stored.id, stored.subject, stored.scopes, stored.name, stored.created, stored.expires, stored.revoked
    )


class APIKeyVerifier:
    """Looks keys up, remembering each answer for `ttl` seconds (bounded, least recent out)."""

    def __init__(self, store: APIKeyStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: OrderedDict[bytes, tuple[float, APIKey | None, str]] = OrderedDict()

    async def verify(self, key: str) -> tuple[Identity | None, str]:
        h = digest(key)
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and now - hit[0] < self.ttl:
            record, why = hit[1], hit[2]
        else:
            import asyncio  # here: the CLI imports this module and should start fast

            record, why = await asyncio.to_thread(self.store.find, key)
            self._cache[h] = (now, record, why)
            self._cache.move_to_end(h)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        if record is not None and record.expires is not None and record.expires <= time.time():
            return None, "expired"
        return (record.identity() if record is not None else None), why


class KeyWatches:
    """The watches open under each API key, ended when their key is revoked.

    A watch outlives the request that checked its key. Every `interval` seconds the keys of the
    open watches are looked up again, all in one query (the store is shared by every instance on
    the database), and the watches of a key that no longer stands end with a 401 ERROR event.
    """

    def __init__(self, store: APIKeyStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._open: dict[str, set[Any]] = {}

    def add(self, key_id: str, watcher: Any) -> Callable[[], None]:
        """Track `watcher` under `key_id`; returns what stops tracking it."""
        self._open.setdefault(key_id, set()).add(watcher)

        def discard() -> None:
            watchers = self._open.get(key_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._open[key_id]

        return discard

    async def run(self) -> None:
        import asyncio  # here, as in APIKeyVerifier: the CLI imports this module

        from watchroute.security.refusals import key_revoked

        while True:
            await asyncio.sleep(self.interval)
            if not self._open:
                continue
            try:
                gone = await asyncio.to_thread(self.store.withdrawn, list(self._open))
            except Exception:  # the next pass tries again
                log.exception("cannot check the API keys of open watches")
                continue
            for key_id in gone:
                for watcher in list(self._open.get(key_id, ())):
                    watcher.revoke(key_revoked())
