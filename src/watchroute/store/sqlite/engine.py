"""The embedded store: SQLite in WAL mode, one writer thread with group commit.

Every write goes through one thread that owns the only writing connection and commits the jobs
waiting for it together (writer.py). Reads use their own connections in a small pool; WAL gives
each a consistent snapshot (reads.py, log_reads.py, snapshot.py). Several processes may share
the file (`--workers`, or instances on one machine): each hands on the others' commits in
revision order (catch_up.py). Compaction drops the log beyond the history horizon in steps
(compaction.py); schema.py has the tables.

A process killed after a commit loses nothing: the commit is in the WAL file before any
client hears of it (synchronous=NORMAL survives a process crash; FULL survives power loss).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from watchroute.core.change import Change
from watchroute.core.filter import Filter
from watchroute.core.problems import Problem
from watchroute.store import ops
from watchroute.store.base import CommitListener, LogSlice, LostListener, Page, Position, Row, WriteOp
from watchroute.store.figures import WriteFigures
from watchroute.store.health import FileHealth
from watchroute.store.peers import PEERS_SCHEMA, Peers, WriterTurn
from watchroute.store.sqlite import compaction, log_reads, reads
from watchroute.store.sqlite.reads import Readers
from watchroute.store.sqlite.schema import SCHEMA, add_columns, connect, read_meta
from watchroute.store.sqlite.snapshot import SQLiteSnapshot
from watchroute.store.sqlite.writer import GroupWriter

log = logging.getLogger("watchroute")


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
        # The last revision handed to the listener, and the history horizon.
        self.revision = 0
        self.compacted = 0
        self._connect = functools.partial(connect, path, self.synchronous)
        self._readers = Readers(self._connect)
        self._writer: GroupWriter | None = None
        self._on_commit: CommitListener | None = None
        self._on_lost: LostListener | None = None
        self._peers: Peers | None = None
        self._turn: WriterTurn | None = None
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

    async def open(self, on_commit: CommitListener, on_lost: LostListener | None = None) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._on_commit = on_commit
        self._on_lost = on_lost
        self._turn = WriterTurn(self.path)
        self._peers = peers = Peers()
        conn = self._connect(create=True)
        # In turn: processes starting together would both try to switch a new file to WAL (a
        # setting kept in the file), and SQLite refuses the second at once, not after a wait.
        with self._turn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA + PEERS_SCHEMA)
            add_columns(conn)
            self.revision, self.compacted = read_meta(conn)
            conn.execute("BEGIN IMMEDIATE")
            peers.join(conn, os.getpid(), time.time())
            conn.execute("COMMIT")
        self.health.opened()
        peers.refresh(conn)
        peers.announce(None)
        self._writer = GroupWriter(
            conn,
            loop=asyncio.get_running_loop(),
            turn=self._turn,
            peers=peers,
            health=self.health,
            figures=self.figures,
            max_document_bytes=self.max_document_bytes,
            max_batch_bytes=self.max_batch_bytes,
            settle=self._committed,
            lost=self._lost,
            revision=lambda: self.revision,
        )
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._peers is not None:
            self._peers.close()
        if self._turn is not None:
            self._turn.close()
        self._readers.close()

    def _committed(self, changes: list[Change]) -> None:
        """On the loop, before the writers hear back: the listener learns of every commit."""
        self.revision = changes[-1].revision
        assert self._on_commit is not None
        try:
            self._on_commit(changes)
        except Exception:  # the writes are committed: their writers are answered regardless
            log.exception("a commit listener failed at revision %d", self.revision)

    def _lost(self, revision: int) -> None:
        """On the loop: revisions up to `revision` were compacted before this process read them."""
        self.revision = max(self.revision, revision)
        if self._on_lost is not None:
            self._on_lost(revision)

    # -- writes ------------------------------------------------------------------------------

    async def write(self, write_ops: list[WriteOp], position: Position | None = None) -> list[Change]:
        assert self._writer is not None, "store is not open"
        return await self._writer.write(write_ops, position)

    async def position(self, name: str) -> str | None:
        value: str | None = await self._readers.run(self._on_reader, reads.position, name)
        return value

    async def unavailable(self) -> str | None:
        if self.health.needs_probe:
            with contextlib.suppress(Problem):
                await self.write([])  # commits (and clears the failure) once the disk takes a page
        return self.health.unavailable()

    # -- reads -------------------------------------------------------------------------------

    def _on_reader(self, fn: Any, *args: Any) -> Any:
        return fn(self._readers.conn(), *args)

    async def get(self, collection: str, id: str) -> Row | None:
        return await self._readers.run(self._on_reader, reads.get_row, collection, id)

    async def list(
        self,
        collection: str,
        flt: Filter | None,
        limit: int,
        after_id: str | None,
        id: str | None = None,
    ) -> Page:
        return await self._readers.run(self._on_reader, reads.list_page, collection, flt, limit, after_id, id)

    async def snapshot(self, collection: str, id: str | None = None) -> SQLiteSnapshot:
        """The collection (or one resource) at the current revision, read a page at a time in
        one read transaction of its own (snapshot.py)."""
        return await self._readers.run(SQLiteSnapshot, self._connect, self._readers.run, collection, id)

    async def read_log(self, after: int, upto: int, collection: str, id: str | None, limit: int) -> LogSlice:
        return await self._readers.run(
            self._on_reader, log_reads.read_log, after, upto, collection, id, limit
        )

    async def committed_revision(self) -> int:
        meta: tuple[int, int] = await self._readers.run(self._on_reader, read_meta)
        return meta[0]

    async def collections(self) -> builtins.list[dict[str, Any]]:
        return await self._readers.run(self._on_reader, reads.collections)

    # -- leases ------------------------------------------------------------------------------

    async def lapsed(self, now: float, limit: int) -> builtins.list[tuple[str, str, float]]:
        return await self._readers.run(self._on_reader, reads.lapsed, now, limit)

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
        self.compacted = await asyncio.to_thread(compaction.compact, self._connect, keep_events, keep_seconds)
        return self.compacted
