"""API keys in PostgreSQL, beside the data, when the store is there (security/apikeys.py).

The statements are those of the SQLite table; only the connection differs: each call opens one
(the CLI runs them once, the server looks a key up once per cache period) with the schema's
search path, and the schema is created first if no server has yet.
"""

from __future__ import annotations

from typing import Any

import psycopg

from watchroute.security.apikeys import APIKeyStore
from watchroute.store.postgres import schema
from watchroute.store.postgres.connect import session_setup

CONNECT_SECONDS = 5


class _Connection:
    """A psycopg connection that takes SQLite's `?` marks (the statements use no literal `?`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, query: str, params: Any = ()) -> psycopg.Cursor[Any]:
        return self._conn.execute(query.replace("?", "%s"), params)

    def close(self) -> None:
        self._conn.close()


class PostgresAPIKeyStore(APIKeyStore):
    def __init__(self, url: str, schema_name: str) -> None:  # not APIKeyStore's: no file here
        self.url = url
        self.schema = schema_name
        self._migrated = False

    def _connect(self) -> Any:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_SECONDS)
        try:
            if not self._migrated:
                schema.migrate(conn, self.schema)
                self._migrated = True
            conn.execute(session_setup(self.schema, 5.0, 30.0))
        except BaseException:
            conn.close()
            raise
        return _Connection(conn)
