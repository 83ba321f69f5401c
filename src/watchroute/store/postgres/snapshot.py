"""A read snapshot of the PostgreSQL store, held across calls: a collection (or one resource) at
one revision, read a page at a time (a watch's initial state).

A REPEATABLE READ transaction sees the database as it was at its first statement for as long as
it stays open: the snapshot keeps one open on a pooled connection and reads every page in it,
so every page shows the state at the revision it read first, whatever commits meanwhile. What
holding it costs: one of the pool's connections until it is closed (so the pool bounds how many
are open at once), and VACUUM cannot remove row versions newer than it meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from watchroute.core.filter import Filter
from watchroute.store.base import Row
from watchroute.store.paging import SCAN_ROWS, fill_page

# Rows looked at per statement: a filter that matches little still answers between statements.


class PostgresSnapshot:
    def __init__(self, pool: AsyncConnectionPool[Any], collection: str, id: str | None) -> None:
        self.collection = collection
        self.id = id
        self.revision = 0
        self.done = False
        self._pool = pool
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._after = ""
        # Leases lapsed by now are left out, as every read leaves them (their DELETED follows).
        self._now = time.time()
        self._busy = False
        self._closed = False

    async def begin(self) -> PostgresSnapshot:
        self._conn = conn = await self._pool.getconn()
        try:
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # The first read starts the snapshot: the revision and every page are read at it.
            cur = await conn.execute("SELECT value FROM meta WHERE key = 'revision'")
            (self.revision,) = await cur.fetchone()
        except BaseException:
            await self._release()
            raise
        return self

    async def page(self, flt: Filter | None, max_rows: int, max_bytes: int) -> list[Row]:
        """The next matching rows in id order: at most `max_rows`, and past `max_bytes` of data
        by no more than the row that crosses it; [] once every row has been read."""
        while not self.done:
            if self._closed or self._conn is None:
                self.done = True
                break
            self._busy = True
            try:
                rows = await self._read(self._conn, flt, max_rows, max_bytes)
            finally:
                self._busy = False
                if self._closed:
                    await self._release()
            if rows:
                return rows
        return []

    def close(self) -> None:
        """Let the snapshot go (also while a page is being read); idempotent."""
        if self._closed:
            return
        self._closed = True
        self.done = True
        if not self._busy and self._conn is not None:
            with contextlib.suppress(RuntimeError):  # no loop any more: the pool is gone too
                asyncio.get_running_loop().create_task(self._release())

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        self.done = True
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("ROLLBACK")
            await self._pool.putconn(conn)

    async def _read(
        self, conn: psycopg.AsyncConnection[Any], flt: Filter | None, max_rows: int, max_bytes: int
    ) -> list[Row]:
        collection = self.collection
        if self.id is not None:
            self.done = True
            cur = await conn.execute(
                "SELECT id, revision, created_revision, data, expires_at FROM resources "
                "WHERE collection = %s AND id = %s AND (expires_at IS NULL OR expires_at > %s)",
                (collection, self.id, self._now),
            )
        else:
            cur = await conn.execute(
                "SELECT id, revision, created_revision, data, expires_at FROM resources "
                "WHERE collection = %s AND id > %s AND (expires_at IS NULL OR expires_at > %s) "
                "ORDER BY id LIMIT %s",
                (collection, self._after, self._now, SCAN_ROWS),
            )
        found = await cur.fetchall()
        page = fill_page(collection, found, flt, max_rows, max_bytes)
        if page.last_id is not None:
            self._after = page.last_id
        if page.exhausted:
            self.done = True
        return page.rows
