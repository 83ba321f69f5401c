"""Reads: a small pool of reader threads, each with its own connection, and the reads of the
current state (one resource, a page of a collection, the collections, lapsed leases).

WAL gives every read transaction the database as of its start, so a page and the revision it is
answered with agree, whatever the writer commits meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from watchroute.core.filter import Filter
from watchroute.core.problems import store_unavailable
from watchroute.store.base import Page, Row
from watchroute.store.health import file_error
from watchroute.store.sqlite.schema import LIVE

LIST_SCAN_CHUNK = 1000
READER_THREADS = 4


class Readers:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._pool = ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="watchroute-read")
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        """This reader thread's connection, opened on its first read."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on a reader thread; 503 when the database file cannot be read."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except sqlite3.Error as exc:
            # A reader that opens its connection after the file has gone finds nothing to open.
            if not file_error(exc):
                raise
            raise store_unavailable(f"the database could not be read ({exc}); try again") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def get_row(conn: sqlite3.Connection, collection: str, id: str) -> Row | None:
    row = conn.execute(
        "SELECT revision, created_revision, data, expires_at FROM resources "
        f"WHERE collection = ? AND id = ? AND {LIVE}",
        (collection, id, time.time()),
    ).fetchone()
    return None if row is None else Row(collection, id, row[0], row[1], row[2], row[3])


def list_page(
    conn: sqlite3.Connection,
    collection: str,
    flt: Filter | None,
    limit: int,
    after_id: str | None,
    id: str | None,
) -> Page:
    """Up to `limit` resources after `after_id` in id order that match `flt`, with the revision
    they are at and the id to continue after (None: the last page), in one read transaction."""
    conn.execute("BEGIN")
    try:
        revision = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
        if id is not None:
            row = get_row(conn, collection, id)
            rows: list[Row] = [row] if row is not None and (flt is None or flt.matches(row.data)) else []
            return Page(rows, revision, None)
        rows = []
        cursor = after_id or ""
        now = time.time()
        while True:
            # A chunk at a time: a filter that matches little still reads in bounded steps.
            chunk = conn.execute(
                "SELECT id, revision, created_revision, data, expires_at FROM resources "
                f"WHERE collection = ? AND id > ? AND {LIVE} ORDER BY id LIMIT ?",
                (collection, cursor, now, LIST_SCAN_CHUNK),
            ).fetchall()
            for rid, rev, created, data, expires in chunk:
                cursor = rid
                row = Row(collection, rid, rev, created, data, expires)
                if flt is None or flt.matches(row.data):
                    rows.append(row)
                    if len(rows) == limit:
                        more = conn.execute(
                            f"SELECT 1 FROM resources WHERE collection = ? AND id > ? AND {LIVE} LIMIT 1",
                            (collection, rid, now),
                        ).fetchone()
                        return Page(rows, revision, rid if more else None)
            if len(chunk) < LIST_SCAN_CHUNK:
                return Page(rows, revision, None)
    finally:
        conn.execute("COMMIT")


def collections(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT collection, count(*) FROM resources WHERE {LIVE} GROUP BY collection ORDER BY collection",
        (time.time(),),
    )
    return [{"name": name, "count": count} for name, count in rows]


def lapsed(conn: sqlite3.Connection, now: float, limit: int) -> list[tuple[str, str, float]]:
    """Leases lapsed by `now`, the oldest first: a range read of the expiry index."""
    return conn.execute(
        "SELECT collection, id, expires_at FROM resources WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
        (now, limit),
    ).fetchall()


def position(conn: sqlite3.Connection, name: str) -> str | None:
    """A named position's last committed value (store/base.py, Position)."""
    row = conn.execute("SELECT value FROM positions WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])
