"""The API-key table's statements, one set for both engines (store.base.APIKeyTable).

Each engine says how a call connects (`_connection`, a short connection of its own: the CLI runs
calls once, the server looks a key up once per cache period) and how its driver marks a
parameter; the SQL is the same.
"""

from __future__ import annotations

import contextlib
from typing import Any

from watchroute.store.base import API_KEY_COLUMNS, StoredKey


class SQLAPIKeys:
    mark = "?"  # the driver's parameter mark

    def _connection(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)

    def insert(self, key: StoredKey) -> None:
        with self._connection() as conn:
            conn.execute(f"INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES ({self._marks(8)})", key.row())

    def revoke(self, id: str, at: float) -> bool:
        m = self.mark
        with self._connection() as conn:
            cursor = conn.execute(
                f"UPDATE api_keys SET revoked = {m} WHERE id = {m} AND revoked IS NULL", (at, id)
            )
            return bool(cursor.rowcount == 1)

    def all(self) -> list[StoredKey]:
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created").fetchall()
        return [StoredKey.from_row(row) for row in rows]

    def get(self, id: str) -> StoredKey | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = {self.mark}", (id,)
            ).fetchone()
        return None if row is None else StoredKey.from_row(row)

    def standing(self, ids: list[str], now: float) -> set[str]:
        if not ids:
            return set()
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT id FROM api_keys WHERE id IN ({self._marks(len(ids))}) AND revoked IS NULL"
                f" AND (expires IS NULL OR expires > {self.mark})",
                (*ids, now),
            ).fetchall()
        return {row[0] for row in rows}
