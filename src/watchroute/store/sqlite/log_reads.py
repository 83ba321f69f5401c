"""Reading the log: a watcher's catch-up behind the window, and other processes' commits."""

from __future__ import annotations

import sqlite3
from typing import Any

from watchroute.core.change import Change
from watchroute.core.problems import Problem
from watchroute.store.base import LogSlice
from watchroute.store.sqlite.schema import read_meta


def log_after(conn: sqlite3.Connection, after: int, upto: int) -> list[Change]:
    """Every change in (after, upto], in revision order, whatever its collection."""
    rows = conn.execute(
        "SELECT revision, ts, type, collection, id, created_revision, data, prev, expires_at FROM log "
        "WHERE revision > ? AND revision <= ? ORDER BY revision",
        (after, upto),
    ).fetchall()
    return [
        Change(rev, type, collection, rid, created, data, prev, ts, expires_at=expires)
        for rev, ts, type, collection, rid, created, data, prev, expires in rows
    ]


def read_log(
    conn: sqlite3.Connection, after: int, upto: int, collection: str, id: str | None, limit: int
) -> LogSlice:
    """At most `limit` changes of `collection` (or of one resource) in (after, upto], in one read
    transaction; 410 when `after` is behind the history horizon."""
    conn.execute("BEGIN")
    try:
        _, compacted = read_meta(conn)
        if after < compacted:
            raise Problem(410, "Expired", f"revision {after} is older than the history horizon")
        sql = (
            "SELECT revision, ts, type, id, created_revision, data, prev, expires_at FROM log "
            "WHERE collection = ? AND revision > ? AND revision <= ?"
        )
        args: list[Any] = [collection, after, upto]
        if id is not None:
            sql += " AND id = ?"
            args.append(id)
        sql += " ORDER BY revision LIMIT ?"
        args.append(limit)
        rows = conn.execute(sql, args).fetchall()
    finally:
        conn.execute("COMMIT")
    changes = [
        Change(rev, type, collection, rid, created, data, prev, ts, expires_at=expires)
        for rev, ts, type, rid, created, data, prev, expires in rows
    ]
    # A full slice may stop short of `upto`: the caller reads on from its last change.
    scanned_to = changes[-1].revision if len(changes) == limit else upto
    return LogSlice(changes, scanned_to)
