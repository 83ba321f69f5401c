"""The group-commit writer: one thread owns the only writing connection.

It takes all the jobs waiting in its queue, reads the current rows they name in one pass,
applies each job in memory (a refused job writes nothing and takes no revision), writes what
the others did in a few multi-row statements and commits them together: one fsync-worthy commit
serves many requests. Between write groups it reads other processes' commits (catch_up.py).

Invariant: the listener hears every committed change in revision order, this process's and the
others', before any writer hears back (`settle` runs on the loop, listener first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from watchroute.core.change import Change
from watchroute.core.problems import store_unavailable
from watchroute.store import ops
from watchroute.store.base import Position, Row, WriteOp
from watchroute.store.figures import WriteFigures
from watchroute.store.health import FileHealth
from watchroute.store.peers import Peers, WriterTurn
from watchroute.store.sqlite.catch_up import PeerFollower
from watchroute.store.sqlite.log_reads import log_after
from watchroute.store.sqlite.schema import read_meta
from watchroute.store.sqlite.statements import READ_CHUNK, insert_many, select_rows

log = logging.getLogger("watchroute")

# A write group with nothing to write while writes are failing (a readiness probe's) writes
# one page anyway: an empty transaction would commit without asking anything of the disk, and
# SQLite leaves a page clean when a row is set to the value it has.
_TOUCH = ("INSERT INTO meta VALUES ('probe', 0)", "DELETE FROM meta WHERE key = 'probe'")

Outcome = list[Change] | BaseException


class GroupWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        loop: asyncio.AbstractEventLoop,
        turn: WriterTurn,
        peers: Peers,
        health: FileHealth,
        figures: WriteFigures,
        max_document_bytes: int,
        max_batch_bytes: int,
        settle: Callable[[list[Change]], None],
        lost: Callable[[int], None],
        revision: Callable[[], int],
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._turn = turn
        self._peers = peers
        self.health = health
        self.figures = figures
        self.max_document_bytes = max_document_bytes
        self.max_batch_bytes = max_batch_bytes
        self._settle_changes = settle  # on the loop: hands committed changes to the listener
        self._lost = lost  # on the loop: revisions compacted before this process read them
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._catch_up_queued = False
        self.follower = PeerFollower(peers, self.request_catch_up, revision)
        self._thread = threading.Thread(
            target=self._write_loop, args=(revision(),), name="watchroute-writer", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self.follower.start(self._loop)

    async def stop(self) -> None:
        self.follower.stop()
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    async def write(self, write_ops: list[WriteOp], position: Position | None = None) -> list[Change]:
        future: asyncio.Future[list[Change]] = self._loop.create_future()
        self._jobs.put(ops.WriteJob(write_ops, future, position))
        return await future

    def request_catch_up(self) -> None:
        # One at a time in the queue: the writer clears the flag before it reads, so a commit
        # announced after that is either seen by that read or asks for another.
        if not self._catch_up_queued:
            self._catch_up_queued = True
            self._jobs.put(ops.CATCH_UP)

    # -- the writer thread -----------------------------------------------------------------------

    def _write_loop(self, seen: int) -> None:
        conn = self._conn  # `seen`: the last revision handed to the listener
        while True:
            jobs, catch_up, stop = ops.take_group(self._jobs)
            if catch_up:
                self._catch_up_queued = False
            try:
                # A write group reads the others' commits first, in its own transaction.
                if jobs:
                    seen = self._commit(conn, jobs, seen)
                elif catch_up:
                    seen = self._catch_up(conn, seen)
            except sqlite3.Error:  # a catch-up that failed is tried again on the next wake-up
                log.exception("reading other processes' commits failed")
            if stop:
                break
        self._leave(conn)

    def _leave(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._peers.leave(conn)
            conn.execute("COMMIT")
        except sqlite3.Error:  # the others strike this name when it refuses their wake-ups
            pass
        conn.close()

    def _catch_up(self, conn: sqlite3.Connection, seen: int) -> int:
        """Hand on what other processes committed after `seen`; return the revision now seen."""
        others, latest, compacted = self.follower.read(conn, seen)
        if not others:
            if compacted > seen:
                # All that others committed after `seen` is compacted already (this process fell
                # behind the horizon): its watchers must hear of it now, not at the next commit.
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                    self._loop.call_soon_threadsafe(self._lost, compacted)
                return compacted
            return seen
        if others[-1].revision < latest:
            self._jobs.put(ops.CATCH_UP)  # the rest in the next pass, between write groups
        self._hand_over([], [], others)
        return others[-1].revision

    def _commit(self, conn: sqlite3.Connection, jobs: list[ops.WriteJob], seen: int) -> int:
        """Apply and commit a group of jobs; return the revision after them.

        Every job is applied in memory first, against the group's current rows (read in one
        pass) and the writes of the jobs before it: a refused job has written nothing, so it
        needs no savepoint, and the group's writes go to the database in a few multi-row
        statements.
        """
        outcomes: list[Outcome] = []
        others: list[Change] = []  # committed by other processes since `seen`
        start = revision = seen
        # SQLite would turn another process away and make it sleep; this wakes it at COMMIT.
        with self._turn:
            try:
                # Inside the try: a database locked past busy_timeout fails this group, not the
                # writer thread (which would leave every later write waiting for ever).
                conn.execute("BEGIN IMMEDIATE")
                latest = read_meta(conn)[0]
                if latest > seen:
                    others = log_after(conn, seen, latest)
                start = revision = latest
                self._peers.strike_gone(conn)
                ts = time.time()
                stored = _current_rows(conn, jobs)
                # The group's writes so far, by resource (None: deleted): a later job sees them,
                # and each resource is written once, in its final state.
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
                    log_rows += [ops.log_row(c) for c in changes]
                positions = ops.positions_of(jobs, outcomes)
                if positions:
                    conn.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?)", positions.items())
                if revision != start:
                    _write_group(conn, log_rows, staged, revision)
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

    def _hand_over(self, jobs: list[ops.WriteJob], outcomes: list[Outcome], others: list[Change]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._settle, jobs, outcomes, others)

    # -- back on the loop ------------------------------------------------------------------------

    def _settle(self, jobs: list[ops.WriteJob], outcomes: list[Outcome], others: list[Change]) -> None:
        # Listeners first: once a writer hears its revision, this instance already knows it.
        committed = others + [c for outcome in outcomes if isinstance(outcome, list) for c in outcome]
        if committed:
            self._settle_changes(committed)
        ops.answer((job.future for job in jobs), outcomes)


def _current_rows(conn: sqlite3.Connection, jobs: list[ops.WriteJob]) -> dict[tuple[str, str], Row]:
    """The stored rows of every resource the group's ops name, in a few lookups."""
    rows: dict[tuple[str, str], Row] = {}
    for collection, keys in ops.wanted(job.ops for job in jobs).items():
        for at in range(0, len(keys), READ_CHUNK):
            chunk = keys[at : at + READ_CHUNK]
            # Padded to a power of two with repeats: a handful of statement texts, each
            # prepared once and then found in the connection's statement cache.
            size = 1 << (len(chunk) - 1).bit_length()
            chunk += [chunk[-1]] * (size - len(chunk))
            for rid, rev, created, data, expires in conn.execute(select_rows(size), (collection, *chunk)):
                rows[(collection, rid)] = Row(collection, rid, rev, created, data, expires)
    return rows


def _write_group(
    conn: sqlite3.Connection,
    log_rows: list[tuple[Any, ...]],
    staged: dict[tuple[str, str], Change | None],
    revision: int,
) -> None:
    insert_many(conn, "INSERT INTO log", 9, log_rows)
    insert_many(
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
