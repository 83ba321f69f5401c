"""The SQLite file's tables, and opening a connection to it.

`meta` holds the revision and the history horizon (`compacted`), `resources` the current state,
`log` every change after the horizon. A database an earlier release made is brought up to this
one's when the store opens (`add_columns`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS resources (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created_revision INTEGER NOT NULL,
    data BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    created_revision INTEGER NOT NULL,
    data BLOB NOT NULL,
    prev BLOB,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS log_by_collection ON log (collection, revision);
-- How far each follower of something outside the store has got (a bridge's broker position),
-- written in the transaction of what it applied (store/base.py, Position).
CREATE TABLE IF NOT EXISTS positions (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
# Columns added since a release that made the tables: (table, column, its type). Each is added
# to a database that lacks it when the store opens; new columns go last, as ALTER TABLE puts them.
ADDED_COLUMNS = (("resources", "expires_at", "REAL"), ("log", "expires_at", "REAL"))
# The sweep of lapsed leases is a range read of this index: only leases are in it.
LEASES_INDEX = (
    "CREATE INDEX IF NOT EXISTS resources_by_expiry ON resources (expires_at) WHERE expires_at IS NOT NULL"
)

# A stored resource is live while it has no lease, or its lease has not lapsed; reads leave a
# lapsed lease out before the sweep has deleted it.
LIVE = "(expires_at IS NULL OR expires_at > ?)"


def connect(path: str, synchronous: str, create: bool = False) -> sqlite3.Connection:
    # Only the store's opening may create the file: a reader or a compaction pass opening a
    # path whose file has gone would leave an empty database there, which the next start
    # would then take for the store.
    target = path if create else Path(path).absolute().as_uri() + "?mode=rw"
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=not create)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def add_columns(conn: sqlite3.Connection) -> None:
    """Bring the tables of a database an earlier release made up to this one's."""
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    conn.execute(LEASES_INDEX)


def read_meta(conn: sqlite3.Connection) -> tuple[int, int]:
    """(the latest revision, the history horizon)."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    return meta["revision"], meta["compacted"]
