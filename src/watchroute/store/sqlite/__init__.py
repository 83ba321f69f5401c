"""The embedded engine: one SQLite file in WAL mode, shared by the processes that open it."""

from watchroute.store.sqlite.engine import SQLiteStore

__all__ = ["SQLiteStore"]
