"""A read snapshot of the SQLite store, held across calls: a watch's initial state, read a page
at a time at one revision.

WAL gives a read transaction the database as it was when the transaction began, for as long as
it stays open. The snapshot keeps one transaction open on a connection of its own and reads
every page in it, so every page shows the state at the revision it read first, whatever commits
meanwhile; no page is read again and nothing is replayed. What holding it costs: a checkpoint
cannot copy the WAL past a snapshot that is still open, so the WAL file grows by the writes made
meanwhile (and is reused from its start once the snapshot ends). The initial phase (initial.py)
bounds how long one stays open.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from watchroute.core.filter import Filter
from watchroute.store.base import Row
from watchroute.store.paging import SCAN_ROWS, fill_page

# Rows looked at per call: a filter that matches little does not hold a reader thread for long.
# The connection's page cache, in KiB: it reads each page of the table once, in order.
CACHE_KIB = 256

Run = Callable[..., Awaitable[Any]]


class SQLiteSnapshot:
    __slots__ = (
        "_after",
        "_busy",
        "_closed",
        "_conn",
        "_lock",
        "_now",
        "_run",
        "collection",
        "done",
        "id",
        "revision",
    )

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], run: Run, collection: str, id: str | None
    ) -> None:
        """Runs in a reader thread (`run` hands later calls to one)."""
        conn = connect()
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute("BEGIN")
        # The first read starts the snapshot: the revision and every page are read at it.
        self.revision: int = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
        # Leases lapsed by now are left out, as every read leaves them (their DELETED follows).
        self._now = time.time()
        self.collection = collection
        self.id = id
        self.done = False
        self._conn: sqlite3.Connection | None = conn
        self._run = run
        self._after = ""
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False

    async def page(self, flt: Filter | None, max_rows: int, max_bytes: int) -> list[Row]:
        while not self.done:
            rows = await self._run(self._scan, flt, max_rows, max_bytes)
            if rows:
                return rows
        return []

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._busy:
                return  # the scan under way closes it when it ends
        self._close_connection()

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        self.done = True
        if conn is not None:
            conn.close()  # ends the read transaction: checkpoints may pass again

    def _scan(self, flt: Filter | None, max_rows: int, max_bytes: int) -> list[Row]:
        with self._lock:
            if self._closed or self._conn is None:
                self.done = True
                return []
            self._busy = True
        try:
            return self._read(self._conn, flt, max_rows, max_bytes)
        finally:
            with self._lock:
                self._busy = False
                closed = self._closed
            if closed:
                self._close_connection()

    def _read(self, conn: sqlite3.Connection, flt: Filter | None, max_rows: int, max_bytes: int) -> list[Row]:
        collection = self.collection
        found: Iterable[Any]
        if self.id is not None:
            self.done = True
            found = conn.execute(
                "SELECT id, revision, created_revision, data, expires_at FROM resources "
                "WHERE collection = ? AND id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (collection, self.id, self._now),
            ).fetchall()
        else:
            # Iterated, not fetched whole: the rows past the page's end are never materialised.
            found = conn.execute(
                "SELECT id, revision, created_revision, data, expires_at FROM resources "
                "WHERE collection = ? AND id > ? AND (expires_at IS NULL OR expires_at > ?) "
                "ORDER BY id LIMIT ?",
                (collection, self._after, self._now, SCAN_ROWS),
            )
        page = fill_page(collection, found, flt, max_rows, max_bytes)
        if page.last_id is not None:
            self._after = page.last_id
        if page.exhausted:
            self.done = True
        return page.rows
