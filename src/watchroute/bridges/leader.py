"""Leader per bridge: of all the instances (or workers) on one store, one runs each bridge.

PostgreSQL: a session advisory lock per bridge, held on a connection of its own, as change
capture leads (capture/capturer.py); the lock goes with the connection, so an instance that dies
or loses the database lets another take over. SQLite: an exclusive `flock` on a file beside the
database file, one per bridge; the kernel lets it go when the process dies, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Protocol

from watchroute.store import Store


class Leadership(Protocol):
    async def acquire(self) -> bool: ...  # True: this instance leads the bridge now
    async def held(self) -> bool: ...  # still leading (the lock's connection alive)
    async def release(self) -> None: ...


class FileLeadership:
    def __init__(self, database_path: str, name: str) -> None:
        # Beside the database: every process on the file finds the same one.
        self.path = Path(f"{database_path}.bridge-{name}.lock")
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing lets the lock go
            self._fd = None


class PostgresLeadership:
    def __init__(self, url: str, schema: str, name: str) -> None:
        from watchroute.store.postgres.schema import lock_key

        self.url = url
        self.key = lock_key(schema, f"bridge:{name}")
        self._conn: Any = None

    async def acquire(self) -> bool:
        import psycopg
        from psycopg import sql

        if self._conn is not None:
            return True
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
        except (psycopg.Error, OSError):
            return False
        try:
            cur = await conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(self.key))
            row = await cur.fetchone()
        except (psycopg.Error, OSError):
            await conn.close()
            return False
        if not (row and row[0]):
            await conn.close()
            return False
        self._conn = conn
        return True

    async def held(self) -> bool:
        import psycopg

        if self._conn is None:
            return False
        try:
            async with asyncio.timeout(5):
                await self._conn.execute("SELECT 1")
            return True
        except (psycopg.Error, OSError, TimeoutError):
            await self.release()
            return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()  # the session's advisory lock goes with it


def leadership_for(store: Store, name: str) -> Leadership:
    """The lock that makes one instance of those sharing `store` run bridge `name`."""
    from watchroute.store.sqlite.engine import SQLiteStore

    if isinstance(store, SQLiteStore):
        return FileLeadership(store.path, name)
    return PostgresLeadership(store.url, store.schema, name)  # type: ignore[attr-defined]
