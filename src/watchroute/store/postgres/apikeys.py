"""API keys in PostgreSQL, beside the data, in watchroute's schema (store.base.APIKeyTable).

Each call opens a connection (the CLI runs them once, the server looks a key up once per cache
period) with the schema's search path, and the schema is created first if no server has yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from watchroute.store.base import API_KEY_COLUMNS, StoredKey
from watchroute.store.postgres import schema
from watchroute.store.postgres.connect import session_setup

CONNECT_SECONDS = 5


class PostgresAPIKeys:
    def __init__(self, url: str, schema_name: str) -> None:
        self.url = url
        self.schema = schema_name
        self._migrated = False

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_SECONDS)
        try:
            if not self._migrated:
                schema.migrate(conn, self.schema)
                self._migrated = True
            conn.execute(session_setup(self.schema, 5.0, 30.0))
            yield conn
        finally:
            conn.close()

    def insert(self, key: StoredKey) -> None:
        with self._connection() as conn:
            conn.execute(
                f"INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                key.row(),
            )

    def revoke(self, id: str, at: float) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked = %s WHERE id = %s AND revoked IS NULL", (at, id)
            )
            return cursor.rowcount == 1

    def all(self) -> list[StoredKey]:
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created").fetchall()
        return [StoredKey.from_row(row) for row in rows]

    def get(self, id: str) -> StoredKey | None:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = %s", (id,)).fetchone()
        return None if row is None else StoredKey.from_row(row)

    def standing(self, ids: list[str], now: float) -> set[str]:
        if not ids:
            return set()
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id FROM api_keys WHERE id = ANY(%s) AND revoked IS NULL"
                " AND (expires IS NULL OR expires > %s)",
                (ids, now),
            ).fetchall()
        return {row[0] for row in rows}
