"""Whether the store's writes can reach the database file: for refusing writes and for /readyz.

Two ways writes fail for as long as nobody acts, where SQLite itself goes on answering:
- The database file was deleted, moved or replaced while the server ran. An open SQLite
  connection keeps the file it opened, so its commits would succeed into a file nobody will open
  again (in WAL mode SQLite does not notice): acknowledged writes would be lost. The path's
  device and inode are compared with those recorded at open, once per write group, just before
  its COMMIT: a stat is a few microseconds, against a commit's hundreds.
- A write failed on the file or the disk under it (disk full, an I/O error, a read-only or
  damaged file). Such a failure is remembered until a write commits again, so that readiness
  says so; while it lasts, a readiness check tries a small write itself (`needs_probe`), so an
  instance taken out of rotation, which gets no writes, still finds out when the disk has room.
Contention (another process holding the lock past the busy timeout) is neither: it passes.
"""

from __future__ import annotations

import logging
import os
import sqlite3

from watchroute.core.problems import store_unavailable

log = logging.getLogger("watchroute")

# SQLite's primary result codes (the low byte of an extended one) that mean the file or the
# disk refuses writes, as opposed to a busy lock or a refused statement.
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
_FILE_ERRORS = frozenset(
    {_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB}
)

FILE_GONE = "the database file was deleted, moved or replaced while the server ran"


def file_error(exc: sqlite3.Error) -> bool:
    """Whether `exc` is the file or the disk refusing, rather than contention or a statement."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _FILE_ERRORS


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class FileHealth:
    """The database file this store opened, and the last write failure that concerned it."""

    __slots__ = ("_gone_logged", "_opened", "failing", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._opened: tuple[int, int] | None = None
        self._gone_logged = False
        # Why the last write group failed on the file or the disk; None once one commits.
        self.failing: str | None = None

    def opened(self) -> None:
        """Record the file as it is now: the one the store's connections have open."""
        self._opened = _identity(self.path)

    def gone(self) -> bool:
        return self._opened is not None and _identity(self.path) != self._opened

    def check_file(self) -> None:
        """Raise StoreUnavailable when the path no longer names the file the store opened."""
        if self.gone():
            if not self._gone_logged:
                self._gone_logged = True
                log.error("%s is no longer the database file opened at start: refusing writes", self.path)
            raise store_unavailable(f"{FILE_GONE}; nothing was written")
        self._gone_logged = False

    @property
    def needs_probe(self) -> bool:
        return self.failing is not None

    def write_failed(self, exc: sqlite3.Error) -> None:
        if not file_error(exc):
            return
        if self.failing is None:
            log.error("writes to %s fail: %s; not ready until one commits again", self.path, exc)
        self.failing = f"the last write failed: {exc}"

    def committed(self) -> None:
        if self.failing is not None:
            log.warning("writes to %s commit again", self.path)
            self.failing = None

    def unavailable(self) -> str | None:
        """Why writes are refused now; None when they can commit, as far as is known."""
        if self.gone():
            return FILE_GONE
        return self.failing
