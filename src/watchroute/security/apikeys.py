"""API keys: created and revoked with `watchroute apikey`, stored hashed beside the data.

A key is `wr_<id>_<secret>`: `id` (public, 10 characters) names it in `list` and `revoke`, and
`secret` is 32 random bytes. Only SHA-256 of the whole key is stored. A fast hash is right here
where it would be wrong for passwords: a slow hash (bcrypt, argon2) exists to make guessing a
low-entropy password expensive, and nobody can guess 256 random bits, slowly or fast; a fast
hash keeps every request's check cheap. The stored digest is compared in constant time.

The table lives in the store's SQLite file (a table of this module's own), so the keys go where
the data goes, and the CLI can manage them while the server runs (WAL lets both at once). With
the PostgreSQL store it lives in watchroute's schema there (store/postgres/apikeys.py).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from watchroute.security.identity import Identity

log = logging.getLogger("watchroute")

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    expires REAL,
    revoked REAL
)
"""
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


def database_path(database: str) -> str:
    prefix = "sqlite:///"
    if not database.startswith(prefix) or database == prefix:
        raise ValueError("API keys live in the SQLite database: --database sqlite:///PATH")
    return database[len(prefix) :]


def api_key_store(database: str, postgres_schema: str = "watchroute") -> APIKeyStore:
    """The keys' table in the server's database: the SQLite file, or PostgreSQL's schema."""
    if database.startswith(("postgresql://", "postgres://")):
        from watchroute.store.postgres.apikeys import PostgresAPIKeyStore

        return PostgresAPIKeyStore(database, postgres_schema)
    return APIKeyStore(database)


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
    def __init__(self, database: str) -> None:
        self.path = database_path(database)

    def _connect(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)
        return conn

    def create(
        self, scopes: list[str], subject: str | None = None, name: str = "", expires: float | None = None
    ) -> tuple[APIKey, str]:
        """A new key; the key itself is returned once and never stored."""
        id = "".join(secrets.choice(ID_CHARS) for _ in range(10))
        key = f"{PREFIX}{id}_{secrets.token_urlsafe(32)}"
        record = APIKey(id, subject or f"key-{id}", tuple(scopes), name, time.time(), expires, None)
        conn = self._connect()
        try:
            conn.execute(
                "INSERT INTO api_keys (id, digest, subject, scopes, name, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    id,
                    digest(key),
                    record.subject,
                    orjson.dumps(scopes).decode(),
                    name,
                    record.created,
                    expires,
                ),
            )
        finally:
            conn.close()
        return record, key

    def revoke(self, id: str) -> bool:
        conn = self._connect()
        try:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), id)
            )
            return cursor.rowcount == 1
        finally:
            conn.close()

    def list(self) -> list[APIKey]:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT id, subject, scopes, name, created, expires, revoked FROM api_keys ORDER BY created"
            ).fetchall()
        finally:
            conn.close()
        return [APIKey(r[0], r[1], tuple(orjson.loads(r[2])), r[3], r[4], r[5], r[6]) for r in rows]

    def withdrawn(self, ids: builtins.list[str]) -> set[str]:
        """Those of `ids` that no longer stand: revoked, expired or deleted."""
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        conn = self._connect()
        try:
            standing = conn.execute(
                f"SELECT id FROM api_keys WHERE id IN ({marks}) AND revoked IS NULL"
                " AND (expires IS NULL OR expires > ?)",
                (*ids, time.time()),
            ).fetchall()
        finally:
            conn.close()
        return set(ids) - {row[0] for row in standing}

    def find(self, key: str) -> tuple[APIKey | None, str]:
        """The key's record if it is valid, else None and why (for the audit log)."""
        id = split_key(key)
        if id is None:
            return None, "malformed"
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT digest, subject, scopes, name, created, expires, revoked FROM api_keys WHERE id = ?",
                (id,),
            ).fetchone()
        finally:
            conn.close()
        if row is None or not hmac.compare_digest(row[0], digest(key)):
            return None, "unknown"
        record = APIKey(id, row[1], tuple(orjson.loads(row[2])), row[3], row[4], row[5], row[6])
        if record.revoked is not None:
            return None, "revoked"
        if record.expires is not None and record.expires <= time.time():
            return None, "expired"
        return record, "ok"


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
