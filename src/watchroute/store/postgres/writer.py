"""The writer of one instance: group commit on one connection, and the log followed in order.

One task owns the instance's only writing connection. It takes every job waiting in its queue
and commits them in one transaction, as the SQLite engine's writer does (store/ops.py applies
each job in memory, against the group's current rows and the earlier jobs' writes: a refused job
has written nothing, so the others of its group commit without it and no savepoint is needed).

The revision is the counter row `meta.revision`, locked by the transaction's first statement and
updated by its last: it serialises writers across all instances in commit order, and a rollback
undoes the increment, so the revisions are gap-free. (A sequence would not do: its values are
handed out outside the transaction, so a later value can commit first and a reader of
`revision > last` would step over the earlier one for ever.) The lock is taken before the
current rows are read because the preconditions must hold at the revision they commit at; all
that needs no database (parsing, encoding) is done before the transaction begins, and the group
takes two pipelined round trips: the lock with the reads, then the writes with the COMMIT.

The same task hands every commit to the listener strictly in revision order, its own and the
other instances' alike: a group first reads what the others committed since the last revision
it handed on (it holds the counter row, so all of that is committed), and between groups it
reads the log after that revision when told to (the doorbell, a periodic tick: engine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from watchroute.core.change import Change
from watchroute.problems import store_unavailable
from watchroute.store import ops
from watchroute.store.base import Position, Row, WriteOp
from watchroute.store.figures import WriteFigures
from watchroute.store.postgres.connect import UNAVAILABLE

log = logging.getLogger("watchroute")

MAX_JOBS_PER_COMMIT = 1024
CATCH_UP_CHUNK = 4096  # other instances' changes read per pass
CONNECT_SECONDS = 5.0

_LOG_COLUMNS = "revision, ts, type, collection, id, created_revision, data, prev, expires_at"
_LOCK_COUNTER = "SELECT value FROM meta WHERE key = 'revision' FOR UPDATE"
_CURRENT_ROWS = (
    "SELECT collection, id, revision, created_revision, data, expires_at FROM resources "
    "JOIN unnest(%s::text[], %s::text[]) AS wanted (collection, id) USING (collection, id)"
)
_INSERT_LOG = (
    f"INSERT INTO log ({_LOG_COLUMNS}) SELECT * FROM unnest(%s::bigint[], %s::float8[], %s::text[], "
    "%s::text[], %s::text[], %s::bigint[], %s::bytea[], %s::bytea[], %s::float8[])"
)
_UPSERT_RESOURCES = (
    "INSERT INTO resources (collection, id, revision, created_revision, data, expires_at) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bytea[], %s::float8[]) "
    "ON CONFLICT (collection, id) DO UPDATE SET revision = excluded.revision, "
    "created_revision = excluded.created_revision, data = excluded.data, expires_at = excluded.expires_at"
)
_DELETE_RESOURCES = (
    "DELETE FROM resources r USING unnest(%s::text[], %s::text[]) AS gone (collection, id) "
    "WHERE r.collection = gone.collection AND r.id = gone.id"
)
_SET_COUNTER = "UPDATE meta SET value = %s WHERE key = 'revision'"
# Named positions (change capture's LSN, a bridge's broker position): with the changes they came
# with, in their transaction (store/base.py, Position).
_SET_POSITIONS = (
    "INSERT INTO positions SELECT * FROM unnest(%s::text[], %s::text[]) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
_LOG_AFTER = f"SELECT {_LOG_COLUMNS} FROM log WHERE revision > %s ORDER BY revision LIMIT %s"


def log_changes(rows: list[tuple[Any, ...]]) -> list[Change]:
    return [
        Change(rev, type, collection, rid, created, data, prev, ts, expires_at=expires)
        for rev, ts, type, collection, rid, created, data, prev, expires in rows
    ]


UNLIMITED = (sys.maxsize, sys.maxsize)


class _Job:
    __slots__ = ("future", "ops", "position", "queued")

    def __init__(
        self, ops: list[WriteOp], future: asyncio.Future[list[Change]], position: Position | None = None
    ) -> None:
        self.ops = ops
        self.future = future
        self.queued = WriteFigures.now()
        self.position = position  # stored with the job's changes, if it commits


class _FarBehind(Exception):
    def __init__(self, others: list[Change]) -> None:
        self.others = others


# A job that writes nothing: read what other instances have committed.
_CATCH_UP: Any = object()


class Writer:
    def __init__(
        self,
        url: str,
        setup: sql.Composed,
        seen: int,
        hand_on: Callable[[list[Change]], None],
        ring: Callable[[int], None],
        limits: tuple[int, int] = (ops.MAX_DOCUMENT_BYTES, ops.MAX_BATCH_BYTES),
        figures: WriteFigures | None = None,
    ) -> None:
        self.url = url
        self.limits = limits  # max_document_bytes, max_batch_bytes
        self.figures = figures or WriteFigures()  # for /metrics
        self.setup = setup
        self._ring = ring  # tells the other instances of a commit, without waiting (engine.py)
        self.seen = seen  # the last revision handed on
        self._hand_on = hand_on
        self._jobs: asyncio.Queue[Any] = asyncio.Queue()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._catch_up_queued = False
        # Why the database could not be reached, until something reaches it again ("": it can).
        self.unreachable = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="watchroute-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._jobs.put_nowait(None)
            await self._task
            self._task = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def write(self, write_ops: list[WriteOp], position: Position | None = None) -> list[Change]:
        return await self.submit(write_ops, position)

    def submit(
        self, write_ops: list[WriteOp], position: Position | None = None
    ) -> asyncio.Future[list[Change]]:
        """Queue a job now, in the order of the calls: its future has the job's changes."""
        future: asyncio.Future[list[Change]] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait(_Job(write_ops, future, position))
        return future

    def request_catch_up(self) -> None:
        # One at a time in the queue: the flag is cleared before the read, so a commit rung
        # after that is either seen by that read or asks for another.
        if not self._catch_up_queued:
            self._catch_up_queued = True
            self._jobs.put_nowait(_CATCH_UP)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                async with asyncio.timeout(CONNECT_SECONDS):
                    conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            except TimeoutError:  # a database out of reach, like one that refuses: 503
                raise psycopg.OperationalError(f"no connection within {CONNECT_SECONDS:g} s") from None
            await conn.execute(self.setup)
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            job = await self._jobs.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while len(jobs) < MAX_JOBS_PER_COMMIT and not self._jobs.empty():
                more = self._jobs.get_nowait()
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            if _CATCH_UP in jobs:
                self._catch_up_queued = False
                jobs = [job for job in jobs if job is not _CATCH_UP]
            try:
                if jobs:
                    await self._commit(jobs)
                else:
                    await self._catch_up()
                    self.unreachable = ""
            except UNAVAILABLE as exc:  # a catch-up that failed is tried again on the next tick
                if not self.unreachable:  # once per outage, not once per tick
                    log.warning("reading other instances' commits failed: %s", exc)
                self.unreachable = f"the database cannot be reached: {str(exc).strip()}"
                await self._drop_connection()
            except Exception:
                log.exception("reading other instances' commits failed")
            if stop:
                return

    async def _catch_up(self) -> None:
        conn = await self._connection()
        cur = await conn.execute(
            f"SELECT {_LOG_COLUMNS} FROM log WHERE revision > %s ORDER BY revision LIMIT %s",
            (self.seen, CATCH_UP_CHUNK),
        )
        others = log_changes(await cur.fetchall())
        if not others:
            return
        if others[0].revision != self.seen + 1:
            # Revisions are gap-free: what is missing was compacted before this instance read it
            # (the tailer then sends its watchers to the log, where they meet 410), or is not
            # there at all, which only a schema changed behind watchroute's back can do.
            row = await (await conn.execute("SELECT value FROM meta WHERE key = 'compacted'")).fetchone()
            if row is None or row[0] < others[0].revision - 1:
                log.error("the log has a hole after revision %d: not handing on past it", self.seen)
                return
        if len(others) == CATCH_UP_CHUNK:
            self.request_catch_up()  # the rest in the next pass, between write groups
        self._settle([], [], others)

    async def _commit(self, jobs: list[_Job]) -> None:
        while True:
            try:
                return await self._commit_group(jobs)
            except _FarBehind as behind:
                self._settle([], [], behind.others)

    async def _commit_group(self, jobs: list[_Job]) -> None:
        outcomes: list[list[Change] | BaseException] = []
        others: list[Change] = []
        start = revision = self.seen
        committed = False
        try:
            conn = await self._connection()
            # Two round trips: BEGIN, the counter's lock and the reads; then the writes, the
            # counter and COMMIT. The reads run once the lock is held, so they see every commit
            # before this one: the other instances' changes since `seen`, the current rows.
            async with conn.pipeline() as pipeline, conn.transaction():
                counter = await conn.execute(_LOCK_COUNTER)
                since = await conn.execute(_LOG_AFTER, (self.seen, CATCH_UP_CHUNK))
                current = await conn.execute(_CURRENT_ROWS, self._wanted(jobs))
                await pipeline.sync()
                (latest,) = await counter.fetchone()  # type: ignore[misc]
                others = log_changes(await since.fetchall())
                if len(others) == CATCH_UP_CHUNK:
                    # Far behind (its catch-ups failed for a while): read the rest without the
                    # counter's lock, which every instance's writes wait for.
                    raise _FarBehind(others)
                start = revision = latest
                stored = {
                    (collection, rid): Row(collection, rid, rev, created, data, expires)
                    for collection, rid, rev, created, data, expires in await current.fetchall()
                }
                ts = time.time()
                # The group's writes so far, by resource (None: deleted): a later job sees them,
                # and each resource is written once, in its final state.
                staged: dict[tuple[str, str], Change | None] = {}
                for job in jobs:
                    try:
                        # A captured row is the table's truth, whatever its size: the limits
                        # are for what clients send.
                        captured = job.position is not None and job.position[0] == "capture"
                        limits = UNLIMITED if captured else self.limits
                        changes, written = ops.apply_job(job.ops, revision, ts, stored, staged, *limits)
                    except Exception as exc:
                        outcomes.append(exc)
                        continue
                    staged.update(written)
                    revision += len(changes)
                    outcomes.append(changes)
                # In commit order: each name keeps the last value its committed jobs carried.
                positions = {
                    job.position[0]: job.position[1]
                    for job, outcome in zip(jobs, outcomes, strict=True)
                    if job.position is not None and isinstance(outcome, list)
                }
                if revision != start or positions:
                    await self._write_group(conn, outcomes, staged, revision, positions)
            committed = True
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
                    await self._drop_connection()
            outcomes = [exc] * len(jobs)
            others = []  # read again by the next catch-up, with whatever this group may have made
            self.request_catch_up()
        self._settle(jobs, outcomes, others)
        if committed and revision != start:
            self._ring(revision)

    @staticmethod
    def _wanted(jobs: list[_Job]) -> tuple[list[str], list[str]]:
        """The (collection, id) pairs the group's ops name, as two arrays for unnest."""
        collections: list[str] = []
        ids: list[str] = []
        for collection, named in ops.wanted(job.ops for job in jobs).items():
            collections += [collection] * len(named)
            ids += named
        return collections, ids

    @staticmethod
    async def _write_group(
        conn: psycopg.AsyncConnection[Any],
        outcomes: list[list[Change] | BaseException],
        staged: dict[tuple[str, str], Change | None],
        revision: int,
        positions: dict[str, str] | None = None,
    ) -> None:
        changes = [c for outcome in outcomes if isinstance(outcome, list) for c in outcome]
        kept = [c for c in staged.values() if c is not None]
        gone = [key for key, c in staged.items() if c is None]
        # Queued in the caller's pipeline, with the COMMIT that follows them.
        await conn.execute(
            _INSERT_LOG,
            (
                [c.revision for c in changes],
                [c.ts for c in changes],
                [c.type for c in changes],
                [c.collection for c in changes],
                [c.id for c in changes],
                [c.created_revision for c in changes],
                [c.data_json for c in changes],
                [c.prev_json for c in changes],
                [c.expires_at for c in changes],
            ),
        )
        if kept:
            await conn.execute(
                _UPSERT_RESOURCES,
                (
                    [c.collection for c in kept],
                    [c.id for c in kept],
                    [c.revision for c in kept],
                    [c.created_revision for c in kept],
                    [c.data_json for c in kept],
                    [c.expires_at for c in kept],
                ),
            )
        if gone:
            await conn.execute(_DELETE_RESOURCES, ([k[0] for k in gone], [k[1] for k in gone]))
        if positions:
            await conn.execute(_SET_POSITIONS, (list(positions), list(positions.values())))
        await conn.execute(_SET_COUNTER, (revision,))

    def _settle(
        self, jobs: list[_Job], outcomes: list[list[Change] | BaseException], others: list[Change]
    ) -> None:
        # Listeners first: once a writer hears its revision, this instance already knows it.
        committed = others + [c for outcome in outcomes if isinstance(outcome, list) for c in outcome]
        if committed:
            self.seen = committed[-1].revision
            try:
                self._hand_on(committed)
            except Exception:  # the writes are committed: their writers are answered regardless
                log.exception("a commit listener failed at revision %d", self.seen)
        ops.answer((job.future for job in jobs), outcomes)
