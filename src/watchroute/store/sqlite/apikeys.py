"""API keys in the SQLite file, in a table of their own beside the data (store.base.APIKeyTable).

Each call opens its own connection: the CLI runs them once, the server looks a key up once per
cache period, and WAL lets them run while the server writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from watchroute.store.base import API_KEY_COLUMNS, StoredKey

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


def database_path(database: str) -> str:
    prefix = "sqlite:///"
    if not database.startswith(prefix) or database == prefix:
        raise ValueError("API keys live in the SQLite database: --database sqlite:///PATH")
    return database[len(prefix) :]


class SQLiteAPIKeys:
    def __init__(self, database: str) -> None:
        self.path = database_path(database)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(SCHEMA)
            yield conn
        finally:
            conn.close()

    def insert(self, key: StoredKey) -> None:
        with self._connection() as conn:
            conn.execute(
                f"INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                key.row(),
            )

    def revoke(self, id: str, at: float) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (at, id)
            )
            return cursor.rowcount == 1

    def all(self) -> list[StoredKey]:
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created").fetchall()
        return [StoredKey.from_row(row) for row in rows]

    def get(self, id: str) -> StoredKey | None:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = ?", (id,)).fetchone()
        return None if row is None else StoredKey.from_row(row)

    def standing(self, ids: list[str], now: float) -> set[str]:
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT id FROM api_keys WHERE id IN ({marks}) AND revoked IS NULL"
                " AND (expires IS NULL OR expires > ?)",
                (*ids, now),
            ).fetchall()
        return {row[0] for row in rows}
