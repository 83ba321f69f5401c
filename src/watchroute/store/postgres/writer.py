"""The writer of one instance: group commit on one connection, and the log followed in order.

One thread owns the instance's only writing connection, as the SQLite engine's writer does. It
takes every job waiting in its queue and commits them in one transaction (store/ops.py applies
each job in memory, against the group's current rows and the earlier jobs' writes: a refused job
has written nothing, so the others of its group commit without it and no savepoint is needed).
A thread rather than a task of the event loop: each of a group's round trips would otherwise
wait for the loop's next turn, which under load is a whole delivery to every watcher, and the
next group could begin only once the loop had handed the last one on. The thread hands each
commit to the loop (`call_soon_threadsafe`, in order) and goes on to the next group.

The revision is the counter row `meta.revision`, locked by the transaction's first statement and
updated by its last: it serialises writers across all instances in commit order, and a rollback
undoes the increment, so the revisions are gap-free. (A sequence would not do: its values are
handed out outside the transaction, so a later value can commit first and a reader of
`revision > last` would step over the earlier one for ever.) The lock is taken before the
current rows are read because the preconditions must hold at the revision they commit at; all
that needs no database (parsing, encoding) is done before the transaction begins, and the group
takes two pipelined round trips: the lock with the reads, then the writes with the COMMIT and
the doorbell (engine.py), a transaction of its own sent behind the COMMIT.

The same thread reads every commit strictly in revision order, its own and the other instances'
alike: a group first reads what the others committed since the last revision it read (it holds
the counter row, so all of that is committed), and between groups it reads the log after that
revision when told to (the doorbell, a periodic tick: engine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from watchroute.core.change import Change
from watchroute.core.problems import store_unavailable
from watchroute.store import ops
from watchroute.store.base import Position, Row, WriteOp
from watchroute.store.figures import WriteFigures
from watchroute.store.postgres import group
from watchroute.store.postgres.connect import UNAVAILABLE
from watchroute.store.postgres.group import log_changes

log = logging.getLogger("watchroute")

CATCH_UP_CHUNK = 4096  # other instances' changes read per pass
CONNECT_SECONDS = 5.0

# The doorbell, after the COMMIT in the same round trip but a transaction of its own: a NOTIFY
# inside the write transaction would hold the cluster's notify lock through the commit. It needs
# no flush to disk: a ring lost in a crash costs a tick, not a change.
_RING = "SELECT set_config('synchronous_commit', 'off', true), pg_notify(%s, %s)"
# "Too many notifications in the NOTIFY queue": the ring is lost, the commit before it is not.
_RING_REFUSED = "54000"


UNLIMITED = (sys.maxsize, sys.maxsize)


class _FarBehind(Exception):
    def __init__(self, others: list[Change]) -> None:
        self.others = others


class Writer:
    def __init__(
        self,
        url: str,
        setup: sql.Composed,
        seen: int,
        hand_on: Callable[[list[Change]], None],
        hand_lost: Callable[[int], None],
        channel: str,
        limits: tuple[int, int] = (ops.MAX_DOCUMENT_BYTES, ops.MAX_BATCH_BYTES),
        figures: WriteFigures | None = None,
    ) -> None:
        self.url = url
        self.limits = limits  # max_document_bytes, max_batch_bytes
        self.figures = figures or WriteFigures()  # for /metrics
        self.setup = setup
        self.channel = channel  # rung after each commit that took revisions (engine.py)
        # The last revision read (committed, this instance's or another's), owned by the
        # thread; the loop is handed each commit after it has moved on.
        self.seen = seen
        # The revision this instance's next ring will carry, set before its COMMIT is sent: the
        # doorbell may hear that ring before the thread has moved `seen` past it.
        self.ringing = 0
        self._hand_on = hand_on
        self._hand_lost = hand_lost  # on the loop: revisions compacted before they were read
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn: psycopg.Connection[Any] | None = None
        self._catch_up_queued = False
        # Why the database could not be reached, until something reaches it again ("": it can).
        self.unreachable = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="watchroute-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def write(self, write_ops: list[WriteOp], position: Position | None = None) -> list[Change]:
        return await self.submit(write_ops, position)

    def submit(
        self, write_ops: list[WriteOp], position: Position | None = None
    ) -> asyncio.Future[list[Change]]:
        """Queue a job now, in the order of the calls: its future has the job's changes."""
        future: asyncio.Future[list[Change]] = asyncio.get_running_loop().create_future()
        self._jobs.put(ops.WriteJob(write_ops, future, position))
        return future

    def request_catch_up(self) -> None:
        """Read the log after `seen` soon; from any thread. One at a time in the queue: the flag
        is cleared before the read, so a commit rung after that is either seen by that read or
        asks for another."""
        if not self._catch_up_queued:
            self._catch_up_queued = True
            self._jobs.put(ops.CATCH_UP)

    def is_news(self, rung: int) -> bool:
        """Whether a ring (of any instance) announces a commit this instance has not read."""
        return rung > max(self.seen, self.ringing)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = psycopg.Connection.connect(self.url, autocommit=True, connect_timeout=int(CONNECT_SECONDS))
            conn.execute(self.setup)
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._next_group():
                pass
        finally:
            self._drop_connection()

    def _next_group(self) -> bool:
        """Commit the waiting jobs (or read the others' commits); False once told to stop."""
        jobs, catch_up, stop = ops.take_group(self._jobs)
        if catch_up:
            self._catch_up_queued = False
        try:
            if jobs:
                self._commit(jobs)
            elif catch_up:
                self._catch_up()
                self.unreachable = ""
        except UNAVAILABLE as exc:  # a catch-up that failed is tried again on the next tick
            if not self.unreachable:  # once per outage, not once per tick
                log.warning("reading other instances' commits failed: %s", exc)
            self.unreachable = f"the database cannot be reached: {str(exc).strip()}"
            self._drop_connection()
        except Exception:
            log.exception("reading other instances' commits failed")
        return not stop

    def _catch_up(self) -> None:
        conn = self._connection()
        others = log_changes(
            conn.execute(group.LOG_AFTER, (self.seen, CATCH_UP_CHUNK), binary=True).fetchall()
        )
        if not others:
            # Nothing after `seen` in the log: nothing committed since, or all of it compacted
            # already (this instance fell behind the horizon), which its watchers must hear of
            # now, not at the next commit.
            (compacted,) = conn.execute("SELECT value FROM meta WHERE key = 'compacted'").fetchone()  # type: ignore[misc]
            if compacted > self.seen:
                self.seen = compacted
                assert self._loop is not None
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                    self._loop.call_soon_threadsafe(self._hand_lost, compacted)
            return
        if others[0].revision != self.seen + 1:
            # Revisions are gap-free: what is missing was compacted before this instance read it
            # (the tailer then sends its watchers to the log, where they meet 410), or is not
            # there at all, which only a schema changed behind watchroute's back can do.
            row = conn.execute("SELECT value FROM meta WHERE key = 'compacted'").fetchone()
            if row is None or row[0] < others[0].revision - 1:
                log.error("the log has a hole after revision %d: not handing on past it", self.seen)
                return
        if len(others) == CATCH_UP_CHUNK:
            self.request_catch_up()  # the rest in the next pass, between write groups
        self._hand_over([], [], others)

    def _commit(self, jobs: list[ops.WriteJob]) -> None:
        while True:
            try:
                return self._commit_group(jobs)
            except _FarBehind as behind:
                self._hand_over([], [], behind.others)

    def _commit_group(self, jobs: list[ops.WriteJob]) -> None:
        outcomes: list[list[Change] | BaseException] = []
        others: list[Change] = []
        try:
            self._transaction(self._connection(), jobs, outcomes, others)
            self.unreachable = ""
            self.figures.committed(job.queued for job in jobs)
        except _FarBehind:
            raise
        except Exception as exc:
            if isinstance(exc, psycopg.Error):
                in_doubt = isinstance(exc, psycopg.OperationalError) and any(
                    isinstance(outcome, list) for outcome in outcomes
                )
                if isinstance(exc, UNAVAILABLE):
                    log.warning("a write group failed: %s", exc)
                    self.unreachable = f"the database cannot be reached: {str(exc).strip()}"
                else:
                    log.exception("a write group failed")
                outcome = "it may have been made: read it back" if in_doubt else "nothing was written"
                exc = store_unavailable(
                    f"the database did not take the write ({str(exc).strip()}); {outcome}, try again"
                )
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    self._drop_connection()
            outcomes = [exc] * len(jobs)
            self.ringing = 0  # a revision rolled back may be another instance's next
            others = []  # read again by the next catch-up, with whatever this group may have made
            self.request_catch_up()
        self._hand_over(jobs, outcomes, others)

    def _transaction(
        self,
        conn: psycopg.Connection[Any],
        jobs: list[ops.WriteJob],
        outcomes: list[list[Change] | BaseException],
        others: list[Change],
    ) -> None:
        """One group's transaction; fills `outcomes` (one per job) and `others` (the other
        instances' commits it read first)."""
        try:
            self._pipelined(conn, jobs, outcomes, others)
        except BaseException as exc:
            status = conn.info.transaction_status
            if (
                status == TransactionStatus.IDLE
                and outcomes
                and getattr(exc, "sqlstate", None) == _RING_REFUSED
            ):
                # Only the ring fails this way once the COMMIT has gone through.
                log.warning("could not ring the other instances: %s", exc)
                return
            if not conn.broken and status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                # A statement refused in the pipeline skipped the rest up to the sync, the
                # COMMIT included, and left the transaction open.
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise

    def _pipelined(
        self,
        conn: psycopg.Connection[Any],
        jobs: list[ops.WriteJob],
        outcomes: list[list[Change] | BaseException],
        others: list[Change],
    ) -> None:
        # Two round trips: BEGIN, the counter's lock and the reads; then the writes, the counter,
        # COMMIT and the ring (and before them, for a large group, its COPYs). The reads run once
        # the lock is held, so they see every commit before this one: the other instances'
        # changes since `seen`, the current rows.
        with conn.pipeline():
            conn.execute("BEGIN")
            counter = conn.execute(group.LOCK_COUNTER, binary=True)
            since = conn.execute(group.LOG_AFTER, (self.seen, CATCH_UP_CHUNK), binary=True)
            current = conn.execute(group.CURRENT_ROWS, self._wanted(jobs), binary=True)
        (latest,) = counter.fetchone()  # type: ignore[misc]
        others += log_changes(since.fetchall())
        if len(others) == CATCH_UP_CHUNK:
            # Far behind (its catch-ups failed for a while): read the rest without the counter's
            # lock, which every instance's writes wait for.
            raise _FarBehind(others)
        start = revision = latest
        stored = {
            (collection, rid): Row(collection, rid, rev, created, data, expires)
            for collection, rid, rev, created, data, expires in current.fetchall()
        }
        ts = time.time()
        # The group's writes so far, by resource (None: deleted): a later job sees them, and each
        # resource is written once, in its final state.
        staged: dict[tuple[str, str], Change | None] = {}
        for job in jobs:
            try:
                # A captured row is the table's truth, whatever its size: the limits are for
                # what clients send.
                captured = job.position is not None and job.position[0] == "capture"
                limits = UNLIMITED if captured else self.limits
                changes, written = ops.apply_job(job.ops, revision, ts, stored, staged, *limits)
            except Exception as exc:
                outcomes.append(exc)
                continue
            staged.update(written)
            revision += len(changes)
            outcomes.append(changes)
        positions = ops.positions_of(jobs, outcomes)
        writes = revision != start or bool(positions)
        changes = [c for outcome in outcomes if isinstance(outcome, list) for c in outcome]
        kept = [c for c in staged.values() if c is not None]
        copied = len(changes) >= group.COPY_FROM
        if revision != start:
            self.ringing = revision
        if copied:
            group.copy_writes(conn, changes, kept, stored)
        with conn.pipeline():
            if writes:
                gone = [key for key, c in staged.items() if c is None]
                group.queue_writes(conn, changes, kept, gone, revision, positions, copied)
            conn.execute("COMMIT")
            if revision != start:
                conn.execute(_RING, (self.channel, str(revision)))

    @staticmethod
    def _wanted(jobs: list[ops.WriteJob]) -> tuple[list[str], list[str]]:
        """The (collection, id) pairs the group's ops name, as two arrays for unnest."""
        collections: list[str] = []
        ids: list[str] = []
        for collection, named in ops.wanted(job.ops for job in jobs).items():
            collections += [collection] * len(named)
            ids += named
        return collections, ids

    def _hand_over(
        self, jobs: list[ops.WriteJob], outcomes: list[list[Change] | BaseException], others: list[Change]
    ) -> None:
        """To the loop, in the order of the commits; the thread goes on to the next group."""
        committed = others + [c for outcome in outcomes if isinstance(outcome, list) for c in outcome]
        if committed:
            self.seen = committed[-1].revision
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._settle, jobs, outcomes, committed)

    def _settle(
        self, jobs: list[ops.WriteJob], outcomes: list[list[Change] | BaseException], committed: list[Change]
    ) -> None:
        # Listeners first: once a writer hears its revision, this instance already knows it.
        if committed:
            try:
                self._hand_on(committed)
            except Exception:  # the writes are committed: their writers are answered regardless
                log.exception("a commit listener failed at revision %d", committed[-1].revision)
        ops.answer((job.future for job in jobs), outcomes)
