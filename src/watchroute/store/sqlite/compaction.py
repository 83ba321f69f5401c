"""Compaction: dropping log entries beyond the history horizon."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from watchroute.store.sqlite.schema import read_meta

COMPACTION_STEP = 10_000  # log entries dropped per transaction


def compact(connect: Callable[[], sqlite3.Connection], keep_events: int, keep_seconds: float) -> int:
    """Keep the last `keep_events` changes and those younger than `keep_seconds` (0: no bound);
    return the new horizon (the compacted revision). Runs on a thread of its own connection."""
    conn = connect()
    try:
        revision, compacted = read_meta(conn)
        target = compacted
        if keep_events:
            target = max(target, revision - keep_events)
        if keep_seconds:
            row = conn.execute(
                "SELECT max(revision) FROM log WHERE ts < ?", (time.time() - keep_seconds,)
            ).fetchone()
            if row[0] is not None:
                target = max(target, row[0])
        # In steps, each its own transaction: the writer never waits long for the lock,
        # however large the surplus (a horizon just made shorter, a first pass).
        while compacted < target:
            step = min(target, compacted + COMPACTION_STEP)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM log WHERE revision <= ?", (step,))
            # max: another process on the same file may have compacted further already.
            conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'compacted'", (step,))
            conn.execute("COMMIT")
            compacted = step
        return read_meta(conn)[1]
    finally:
        conn.close()
