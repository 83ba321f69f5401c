"""The embedded store: SQLite in WAL mode, one writer thread with group commit.

Every write goes through one thread that owns the only writing connection. It takes all the
jobs waiting in its queue, reads the current rows they name in one pass, applies each job in
memory (a refused job writes nothing and takes no revision), writes what the others did in a
few multi-row statements and commits them together: one fsync-worthy commit serves many requests.
Reads use their own connections in a small pool; WAL gives each a consistent snapshot.

Several processes may share the file (`--workers`, or instances on one machine). The revision
is read inside each write transaction, which SQLite serialises across processes, so revisions
stay one gap-free sequence; each process reads the others' commits from the log, woken by them
after each commit (peers.py), and hands every commit to its listener in revision order.

A process killed after a commit loses nothing: the commit is in the WAL file before any
client hears of it (synchronous=NORMAL survives a process crash; FULL survives power loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from watchroute.core.change import Change
from watchroute.core.filter import Filter
from watchroute.problems import Problem, store_unavailable
from watchroute.store import ops
from watchroute.store.base import CommitListener, LogSlice, Page, Position, Row, WriteOp
from watchroute.store.figures import WriteFigures
from watchroute.store.health import FileHealth, file_error
from watchroute.store.peers import PEERS_SCHEMA, Peers, WriterTurn
from watchroute.store.sqlite.snapshot import SQLiteSnapshot

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
_LIVE = "(expires_at IS NULL OR expires_at > ?)"

log = logging.getLogger("watchroute")

MAX_JOBS_PER_COMMIT = 1024
COMPACTION_STEP = 10_000  # log entries dropped per transaction
LIST_SCAN_CHUNK = 1000
READ_CHUNK = 512  # ids per lookup of a group's current rows (SQLite takes 32766 parameters)
WRITE_CHUNK = 256  # rows per INSERT statement
CATCH_UP_CHUNK = 4096  # other processes' changes read per pass
# How often a process looks for commits of others on its own, in case a wake-up was lost.
PEER_CHECK_SECONDS = 1.0
# A write group with nothing to write while writes are failing (a readiness probe's) writes
# one page anyway: an empty transaction would commit without asking anything of the disk, and
# SQLite leaves a page clean when a row is set to the value it has.
_TOUCH = ("INSERT INTO meta VALUES ('probe', 0)", "DELETE FROM meta WHERE key = 'probe'")

# The writer's statements take many rows each. sqlite3 lets go of the GIL around every step of
# a statement, and a thread that lets go while the event loop is busy may wait up to the switch
# interval (5 ms) to have it back: a step per row (executemany) had the writer queue behind the
# loop once per row. Statement texts come in a few sizes (powers of two), each prepared once and
# then found in the connection's statement cache.


@functools.cache
def _select_rows(count: int) -> str:
    marks = ", ".join("?" * count)
    return (
        f"SELECT id, revision, created_revision, data, expires_at FROM resources "
        f"WHERE collection = ? AND id IN ({marks})"
    )


@functools.cache
def _insert_rows(head: str, width: int, count: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES " + ", ".join([row] * count)


def _chunk_sizes(count: int) -> list[int]:
    """`count` as WRITE_CHUNKs and then powers of two, largest first."""
    sizes = [WRITE_CHUNK] * (count // WRITE_CHUNK)
    rest = count % WRITE_CHUNK
    bit = WRITE_CHUNK
    while rest:
        bit >>= 1
        if rest & bit:
            sizes.append(bit)
            rest -= bit
    return sizes


def _insert_many(conn: sqlite3.Connection, head: str, width: int, rows: list[tuple[Any, ...]]) -> None:
    at = 0
    for size in _chunk_sizes(len(rows)):
        values = [value for row in rows[at : at + size] for value in row]
        conn.execute(_insert_rows(head, width, size), values)
        at += size


class _Job:
    __slots__ = ("future", "ops", "position", "queued")

    def __init__(
        self, ops: list[WriteOp], future: asyncio.Future[list[Change]], position: Position | None = None
    ) -> None:
        self.ops = ops
        self.future = future
        self.queued = WriteFigures.now()
        self.position = position  # stored with the job's changes, if it commits


# A job that writes nothing: read what other processes have committed.
_CATCH_UP: Any = object()


class SQLiteStore:
    def __init__(
        self,
        path: str,
        synchronous: str = "NORMAL",
        max_document_bytes: int = ops.MAX_DOCUMENT_BYTES,
        max_batch_bytes: int = ops.MAX_BATCH_BYTES,
    ) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.max_document_bytes = max_document_bytes
        self.max_batch_bytes = max_batch_bytes
        self.revision = 0
        self.compacted = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="watchroute-read")
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_commit: CommitListener | None = None
        self._peers: Peers | None = None
        self._turn: WriterTurn | None = None
        self._catch_up_queued = False
        self._peers_changed = False
        self._peer_check: asyncio.TimerHandle | None = None
        self.health = FileHealth(path)
        self.figures = WriteFigures()

    @classmethod
    def from_url(
        cls,
        url: str,
        synchronous: str = "NORMAL",
        max_document_bytes: int = ops.MAX_DOCUMENT_BYTES,
        max_batch_bytes: int = ops.MAX_BATCH_BYTES,
    ) -> SQLiteStore:
        # sqlite:///relative/path or sqlite:////absolute/path. ":memory:" is refused: a memory
        # database is private to one connection, and the store has several.
        prefix = "sqlite:///"
        path = url[len(prefix) :] if url.startswith(prefix) else ""
        if not path or path == ":memory:":
            raise ValueError("sqlite needs a file path: sqlite:///./watchroute.db")
        # A mistyped path should not quietly grow a tree of directories with an empty database.
        directory = Path(path).parent
        if not directory.is_dir():
            raise ValueError(f"the database's directory {directory} does not exist (create it first)")
        return cls(path, synchronous, max_document_bytes, max_batch_bytes)

    # -- lifecycle ---------------------------------------------------------------------------

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        # Only the store's opening may create the file: a reader or a compaction pass opening a
        # path whose file has gone would leave an empty database there, which the next start
        # would then take for the store.
        target = self.path if create else Path(self.path).absolute().as_uri() + "?mode=rw"
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=not create)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    async def open(self, on_commit: CommitListener) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._on_commit = on_commit
        self._turn = WriterTurn(self.path)
        self._peers = peers = Peers()
        conn = self._connect(create=True)
        # In turn: processes starting together would both try to switch a new file to WAL (a
        # setting kept in the file), and SQLite refuses the second at once, not after a wait.
        with self._turn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA + PEERS_SCHEMA)
            self._add_columns(conn)
            self.revision, self.compacted = self._read_meta(conn)
            conn.execute("BEGIN IMMEDIATE")
            peers.join(conn, os.getpid(), time.time())
            conn.execute("COMMIT")
        self.health.opened()
        peers.refresh(conn)
        peers.announce(None)
        if peers.socket is not None:
            self._loop.add_reader(peers.socket, self._woken)
        self._check_peers()
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="watchroute-writer", daemon=True
        )
        self._writer.start()

    async def close(self) -> None:
        if self._peer_check is not None:
            self._peer_check.cancel()
        if self._peers is not None and self._peers.socket is not None and self._loop is not None:
            self._loop.remove_reader(self._peers.socket)
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._peers is not None:
            self._peers.close()
        if self._turn is not None:
            self._turn.close()
        self._readers.shutdown(wait=True)

    @staticmethod
    def _add_columns(conn: sqlite3.Connection) -> None:
        """Bring the tables of a database an earlier release made up to this one's."""
        for table, column, kind in ADDED_COLUMNS:
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        conn.execute(LEASES_INDEX)

    @staticmethod
    def _read_meta(conn: sqlite3.Connection) -> tuple[int, int]:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        return meta["revision"], meta["compacted"]

    # -- other processes on the same file ----------------------------------------------------

    def _woken(self) -> None:
        """A peer's datagrams: catch up with its commits, or look at who is there now."""
        assert self._peers is not None
        revision, joined = self._peers.receive()
        if joined:
            self._peers_changed = True
        if joined or revision > self.revision:
            self._request_catch_up()

    def _check_peers(self) -> None:
        self._peers_changed = True
        self._request_catch_up()
        assert self._loop is not None
        self._peer_check = self._loop.call_later(PEER_CHECK_SECONDS, self._check_peers)

    def _request_catch_up(self) -> None:
        # One at a time in the queue: the writer clears the flag before it reads, so a commit
        # announced after that is either seen by that read or asks for another.
        if not self._catch_up_queued:
            self._catch_up_queued = True
            self._jobs.put(_CATCH_UP)

    @staticmethod
    def _log_after(conn: sqlite3.Connection, after: int, upto: int) -> list[Change]:
        rows = conn.execute(
            "SELECT revision, ts, type, collection, id, created_revision, data, prev, expires_at FROM log "
            "WHERE revision > ? AND revision <= ? ORDER BY revision",
            (after, upto),
        ).fetchall()
        return [
            Change(rev, type, collection, rid, created, data, prev, ts, expires_at=expires)
            for rev, ts, type, collection, rid, created, data, prev, expires in rows
        ]

    def _catch_up(self, conn: sqlite3.Connection, seen: int) -> int:
        """Hand on what other processes committed after `seen`; return the revision now seen."""
        assert self._peers is not None
        conn.execute("BEGIN")
        try:
            if self._peers_changed:
                self._peers_changed = False
                self._peers.refresh(conn)
            latest = self._read_meta(conn)[0]
            others = self._log_after(conn, seen, min(latest, seen + CATCH_UP_CHUNK)) if latest > seen else []
        finally:
            conn.execute("COMMIT")
        if not others:
            return seen
        if others[-1].revision < latest:
            self._jobs.put(_CATCH_UP)  # the rest in the next pass, between write groups
        self._hand_over([], [], others)
        return others[-1].revision

    # -- writes ------------------------------------------------------------------------------

    async def write(self, write_ops: list[WriteOp], position: Position | None = None) -> list[Change]:
        assert self._loop is not None, "store is not open"
        future: asyncio.Future[list[Change]] = self._loop.create_future()
        self._jobs.put(_Job(write_ops, future, position))
        return await future

    async def position(self, name: str) -> str | None:
        def read() -> str | None:
            row = self._reader().execute("SELECT value FROM positions WHERE name = ?", (name,)).fetchone()
            return None if row is None else row[0]

        return await self._read(read)

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        seen = self.revision  # the last revision handed to the listener
        while True:
            job = self._jobs.get()
            if job is None:
                break
            jobs = [job]
            stop = False
            while len(jobs) < MAX_JOBS_PER_COMMIT:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            if _CATCH_UP in jobs:
                self._catch_up_queued = False
                jobs = [job for job in jobs if job is not _CATCH_UP]
            try:
                # A write group reads the others' commits first, in its own transaction.
                seen = self._commit(conn, jobs, seen) if jobs else self._catch_up(conn, seen)
            except sqlite3.Error:  # a catch-up that failed is tried again on the next wake-up
                log.exception("reading other processes' commits failed")
            if stop:
                break
        self._leave(conn)

    def _leave(self, conn: sqlite3.Connection) -> None:
        assert self._peers is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._peers.leave(conn)
            conn.execute("COMMIT")
        except sqlite3.Error:  # the others strike this name when it refuses their wake-ups
            pass
        conn.close()

    def _commit(self, conn: sqlite3.Connection, jobs: list[_Job], seen: int) -> int:
        """Apply and commit a group of jobs; return the revision after them.

        Every job is applied in memory first, against the group's current rows (read in one
        pass) and the writes of the jobs before it: a refused job has written nothing, so it
        needs no savepoint, and the group's writes go to the database in a few multi-row
        statements.
        """
        assert self._peers is not None and self._turn is not None
        outcomes: list[list[Change] | BaseException] = []
        others: list[Change] = []  # committed by other processes since `seen`
        start = revision = seen
        # SQLite would turn another process away and make it sleep; this wakes it at COMMIT.
        with self._turn:
            try:
                # Inside the try: a database locked past busy_timeout fails this group, not the
                # writer thread (which would leave every later write waiting for ever).
                conn.execute("BEGIN IMMEDIATE")
                latest = self._read_meta(conn)[0]
                if latest > seen:
                    others = self._log_after(conn, seen, latest)
                start = revision = latest
                self._peers.strike_gone(conn)
                ts = time.time()
                stored = self._current_rows(conn, jobs)
                # The group's writes so far, by resource (None: deleted): a later job sees them, and
                # each resource is written once, in its final state.
                staged: dict[tuple[str, str], Change | None] = {}
                log_rows: list[tuple[Any, ...]] = []
                for job in jobs:
                    try:
                        changes, written = ops.apply_job(
                            job.ops,
                            revision,
                            ts,
                            stored,
                            staged,
                            self.max_document_bytes,
                            self.max_batch_bytes,
                        )
                    except Exception as exc:
                        outcomes.append(exc)
                        continue
                    staged.update(written)
                    revision += len(changes)
                    outcomes.append(changes)
                    log_rows += [
                        (
                            c.revision,
                            ts,
                            c.type,
                            c.collection,
                            c.id,
                            c.created_revision,
                            c.data_json,
                            c.prev_json,
                            c.expires_at,
                        )
                        for c in changes
                    ]
                positions = {
                    job.position[0]: job.position[1]
                    for job, outcome in zip(jobs, outcomes, strict=True)
                    if job.position is not None and isinstance(outcome, list)
                }
                if positions:
                    conn.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?)", positions.items())
                if revision != start:
                    self._write_group(conn, log_rows, staged, revision)
                elif self.health.failing is not None and not positions:
                    for statement in _TOUCH:
                        conn.execute(statement)
                # Last before COMMIT: a commit into a file that has left its path is lost.
                self.health.check_file()
                conn.execute("COMMIT")
                self.health.committed()
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    self.health.write_failed(exc)
                    exc = store_unavailable(
                        f"the database refused the write ({exc}); nothing was written, try again"
                    )
                outcomes = [exc] * len(jobs)
                revision = others[-1].revision if others else seen
        self.figures.committed(job.queued for job in jobs)
        self._hand_over(jobs, outcomes, others)
        if revision != start:
            self._peers.announce(revision)
        return revision

    def _hand_over(
        self, jobs: list[_Job], outcomes: list[list[Change] | BaseException], others: list[Change]
    ) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._settle, jobs, outcomes, others)

    @staticmethod
    def _current_rows(conn: sqlite3.Connection, jobs: list[_Job]) -> dict[tuple[str, str], Row]:
        """The stored rows of every resource the group's ops name, in a few lookups."""
        rows: dict[tuple[str, str], Row] = {}
        for collection, keys in ops.wanted(job.ops for job in jobs).items():
            for at in range(0, len(keys), READ_CHUNK):
                chunk = keys[at : at + READ_CHUNK]
                # Padded to a power of two with repeats: a handful of statement texts, each
                # prepared once and then found in the connection's statement cache.
                size = 1 << (len(chunk) - 1).bit_length()
                chunk += [chunk[-1]] * (size - len(chunk))
                for rid, rev, created, data, expires in conn.execute(
                    _select_rows(size), (collection, *chunk)
                ):
                    rows[(collection, rid)] = Row(collection, rid, rev, created, data, expires)
        return rows

    @staticmethod
    def _write_group(
        conn: sqlite3.Connection,
        log_rows: list[tuple[Any, ...]],
        staged: dict[tuple[str, str], Change | None],
        revision: int,
    ) -> None:
        _insert_many(conn, "INSERT INTO log", 9, log_rows)
        _insert_many(
            conn,
            "INSERT OR REPLACE INTO resources",
            6,
            [
                (c.collection, c.id, c.revision, c.created_revision, c.data_json, c.expires_at)
                for c in staged.values()
                if c is not None
            ],
        )
        deleted = [key for key, c in staged.items() if c is None]
        if deleted:
            conn.executemany("DELETE FROM resources WHERE collection = ? AND id = ?", deleted)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))

    def _settle(
        self, jobs: list[_Job], outcomes: list[list[Change] | BaseException], others: list[Change]
    ) -> None:
        # Listeners first: once a writer hears its revision, this instance already knows it.
        committed = others + [c for outcome in outcomes if isinstance(outcome, list) for c in outcome]
        if committed:
            self.revision = committed[-1].revision
            assert self._on_commit is not None
            try:
                self._on_commit(committed)
            except Exception:  # the writes are committed: their writers are answered regardless
                log.exception("a commit listener failed at revision %d", self.revision)
        ops.answer((job.future for job in jobs), outcomes)

    # -- reads -------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    async def _read(self, fn: Any, *args: Any) -> Any:
        assert self._loop is not None
        try:
            return await self._loop.run_in_executor(self._readers, fn, *args)
        except sqlite3.Error as exc:
            # A reader that opens its connection after the file has gone finds nothing to open.
            if not file_error(exc):
                raise
            raise store_unavailable(f"the database could not be read ({exc}); try again") from None

    @staticmethod
    def _get(conn: sqlite3.Connection, collection: str, id: str) -> Row | None:
        row = conn.execute(
            "SELECT revision, created_revision, data, expires_at FROM resources "
            f"WHERE collection = ? AND id = ? AND {_LIVE}",
            (collection, id, time.time()),
        ).fetchone()
        return None if row is None else Row(collection, id, row[0], row[1], row[2], row[3])

    async def get(self, collection: str, id: str) -> Row | None:
        return await self._read(lambda: self._get(self._reader(), collection, id))

    async def list(
        self,
        collection: str,
        flt: Filter | None,
        limit: int,
        after_id: str | None,
        id: str | None = None,
    ) -> Page:
        return await self._read(self._list, collection, flt, limit, after_id, id)

    def _list(
        self, collection: str, flt: Filter | None, limit: int, after_id: str | None, id: str | None
    ) -> Page:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            revision = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
            if id is not None:
                row = self._get(conn, collection, id)
                rows = [row] if row is not None and (flt is None or flt.matches(row.data)) else []
                return Page(rows, revision, None)
            rows: list[Row] = []
            cursor = after_id or ""
            now = time.time()
            while True:
                chunk = conn.execute(
                    "SELECT id, revision, created_revision, data, expires_at FROM resources "
                    f"WHERE collection = ? AND id > ? AND {_LIVE} ORDER BY id LIMIT ?",
                    (collection, cursor, now, LIST_SCAN_CHUNK),
                ).fetchall()
                for rid, rev, created, data, expires in chunk:
                    cursor = rid
                    row = Row(collection, rid, rev, created, data, expires)
                    if flt is None or flt.matches(row.data):
                        rows.append(row)
                        if len(rows) == limit:
                            more = conn.execute(
                                "SELECT 1 FROM resources "
                                f"WHERE collection = ? AND id > ? AND {_LIVE} LIMIT 1",
                                (collection, rid, now),
                            ).fetchone()
                            return Page(rows, revision, rid if more else None)
                if len(chunk) < LIST_SCAN_CHUNK:
                    return Page(rows, revision, None)
        finally:
            conn.execute("COMMIT")

    async def snapshot(self, collection: str, id: str | None = None) -> SQLiteSnapshot:
        """The collection (or one resource) at the current revision, read a page at a time in
        one read transaction of its own (snapshot.py)."""
        return await self._read(SQLiteSnapshot, self._connect, self._read, collection, id)

    async def read_log(self, after: int, upto: int, collection: str, id: str | None, limit: int) -> LogSlice:
        return await self._read(self._read_log, after, upto, collection, id, limit)

    def _read_log(self, after: int, upto: int, collection: str, id: str | None, limit: int) -> LogSlice:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            _, compacted = self._read_meta(conn)
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
        scanned_to = changes[-1].revision if len(changes) == limit else upto
        return LogSlice(changes, scanned_to)

    async def unavailable(self) -> str | None:
        if self.health.needs_probe:
            with contextlib.suppress(Problem):
                await self.write([])  # commits (and clears the failure) once the disk takes a page
        return self.health.unavailable()

    async def committed_revision(self) -> int:
        def read() -> int:
            return self._read_meta(self._reader())[0]

        return await self._read(read)

    async def collections(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            rows = self._reader().execute(
                f"SELECT collection, count(*) FROM resources WHERE {_LIVE} "
                "GROUP BY collection ORDER BY collection",
                (time.time(),),
            )
            return [{"name": name, "count": count} for name, count in rows]

        return await self._read(read)

    # -- leases ------------------------------------------------------------------------------

    async def lapsed(self, now: float, limit: int) -> list[tuple[str, str, float]]:
        def read() -> list[tuple[str, str, float]]:
            return (
                self._reader()
                .execute(
                    "SELECT collection, id, expires_at FROM resources WHERE expires_at <= ? "
                    "ORDER BY expires_at LIMIT ?",
                    (now, limit),
                )
                .fetchall()
            )

        return await self._read(read)

    @contextlib.asynccontextmanager
    async def sweep_turn(self) -> AsyncIterator[bool]:
        # Every process on the file sweeps: the guarded delete lets only the first through, and
        # the writer turn has the others' deletes of a lease find it gone.
        yield True

    # -- compaction --------------------------------------------------------------------------

    async def compact(self, keep_events: int, keep_seconds: float) -> int:
        """Drop log entries beyond the history horizon; return the new compacted revision."""
        if self.health.gone():  # said once by the writer; a pass every few seconds would fail
            return self.compacted

        def run() -> int:
            conn = self._connect()
            try:
                revision, compacted = self._read_meta(conn)
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
                return self._read_meta(conn)[1]
            finally:
                conn.close()

        self.compacted = await asyncio.to_thread(run)
        return self.compacted
