"""API keys in the SQLite file, in a table of their own beside the data (store/apikeys.py).

Each call opens its own connection: the CLI runs them once, the server looks a key up once per
cache period, and WAL lets them run while the server writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from watchroute.store.apikeys import SQLAPIKeys

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


class SQLiteAPIKeys(SQLAPIKeys):
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
