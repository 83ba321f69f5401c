"""API keys in PostgreSQL, beside the data, in watchroute's schema (store/apikeys.py).

Each call opens a connection (the CLI runs them once, the server looks a key up once per cache
period) with the schema's search path, and the schema is created first if no server has yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from watchroute.store.apikeys import SQLAPIKeys
from watchroute.store.postgres import schema
from watchroute.store.postgres.connect import session_setup

CONNECT_SECONDS = 5


class PostgresAPIKeys(SQLAPIKeys):
    mark = "%s"

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
