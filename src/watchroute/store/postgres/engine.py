"""The PostgreSQL store: any number of instances on one database.

Writes go through the instance's writer (writer.py: group commit, the counter row). Reads take a
connection from a bounded pool, whatever the number of watchers: a watcher reads the log only
while it is behind the window. Each instance learns of the others' commits from the log itself,
read in revision order by its writer; a NOTIFY sent after each commit (outside the write
transaction) rings the others early, on one LISTEN connection per instance (doorbell.py), and a
periodic tick covers a ring that is lost (a dropped LISTEN connection, a restart). Connections
per instance: the pool's, the writer's and the listener's.

When the database is out of reach, writes and reads answer 503 StoreUnavailable with
Retry-After; open watches keep their connections and their bookmarks, and read on from the log
once the database is back.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from watchroute.core.change import Change
from watchroute.core.filter import Filter
from watchroute.core.problems import Problem, store_unavailable
from watchroute.store import ops
from watchroute.store.base import CommitListener, LogSlice, LostListener, Page, Position, Row, WriteOp
from watchroute.store.figures import WriteFigures
from watchroute.store.postgres import schema
from watchroute.store.postgres.connect import UNAVAILABLE, channel, session_setup
from watchroute.store.postgres.doorbell import Doorbell
from watchroute.store.postgres.snapshot import PostgresSnapshot
from watchroute.store.postgres.writer import CONNECT_SECONDS, Writer

log = logging.getLogger("watchroute")

LIST_SCAN_CHUNK = 1000
COMPACTION_STEP = 10_000  # log entries dropped per transaction
# How long a read waits for a pooled connection before it answers 503 (all busy, or the
# database is out of reach and the pool is reconnecting).
POOL_WAIT_SECONDS = 2.0
# A stored resource is live while it has no lease, or its lease has not lapsed; reads leave a
# lapsed lease out before the sweep has deleted it.
_LIVE = "(expires_at IS NULL OR expires_at > %s)"


def _unreadable(exc: Exception) -> Problem:
    return store_unavailable(f"the database cannot be read now ({str(exc).strip()}); try again")


class PostgresStore:
    def __init__(
        self,
        url: str,
        schema_name: str = "watchroute",
        pool_size: int = 10,
        tail_interval: float = 0.2,
        lock_timeout: float = 5.0,
        idle_in_transaction_timeout: float = 30.0,
        synchronous_commit: bool = True,
        max_document_bytes: int = ops.MAX_DOCUMENT_BYTES,
        max_batch_bytes: int = ops.MAX_BATCH_BYTES,
    ) -> None:
        self.url = url
        self.limits = (max_document_bytes, max_batch_bytes)  # what one write, one batch may leave
        self.figures = WriteFigures()  # the writer's, for /metrics
        self.schema = schema_name
        self.pool_size = pool_size
        self.tail_interval = tail_interval
        self.setup = session_setup(schema_name, lock_timeout, idle_in_transaction_timeout)
        # Off: a write is acknowledged once PostgreSQL has it in memory, before its WAL is on disk
        # (written within wal_writer_delay). It survives the instance's SIGKILL and a restart of
        # PostgreSQL, not a crash of PostgreSQL's machine: what SQLite's synchronous=NORMAL gives.
        self.writer_setup = (
            self.setup
            if synchronous_commit
            else sql.SQL("; ").join([self.setup, sql.SQL("SET synchronous_commit = off")])
        )
        self.channel = channel(schema_name)
        self.revision = 0
        self.compacted = 0
        self._on_commit: CommitListener | None = None
        self._on_lost: LostListener | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self._writer: Writer | None = None
        self._doorbell: Doorbell | None = None
        self._tick: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> PostgresStore:
        return cls(
            settings.database,
            settings.postgres_schema,
            settings.postgres_pool_size,
            settings.postgres_tail_interval,
            settings.postgres_lock_timeout,
            settings.postgres_idle_in_transaction_timeout,
            settings.postgres_synchronous_commit,
            settings.document_limit,
            settings.batch_limit,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def migrate(self) -> int:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=int(CONNECT_SECONDS)) as conn:
            return schema.migrate(conn, self.schema)

    async def open(self, on_commit: CommitListener, on_lost: LostListener | None = None) -> None:
        self._on_commit = on_commit
        self._on_lost = on_lost
        await asyncio.to_thread(self.migrate)
        self._pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True},
            configure=self._configure,
            timeout=POOL_WAIT_SECONDS,
            open=False,
            name="watchroute-read",
        )
        await self._pool.open(wait=True, timeout=CONNECT_SECONDS)
        async with self._pool.connection() as conn:
            self.revision, self.compacted = await self._read_meta(conn)
        self._writer = Writer(
            self.url,
            self.writer_setup,
            self.revision,
            self._hand_on,
            self._hand_lost,
            self.channel,
            self.limits,
            self.figures,
        )
        self._writer.start()
        self._doorbell = Doorbell(self.url, self.channel, self._writer)
        self._doorbell.start()
        self._schedule_tick()

    async def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self._doorbell is not None:
            self._doorbell.stop()
            await asyncio.to_thread(self._doorbell.join)
        if self._writer is not None:
            await self._writer.stop()
        if self._pool is not None:
            await self._pool.close()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(self.setup)

    @staticmethod
    async def _read_meta(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
        cur = await conn.execute("SELECT key, value FROM meta WHERE key IN ('revision', 'compacted')")
        meta = dict(await cur.fetchall())
        return meta["revision"], meta["compacted"]

    def _hand_on(self, changes: list[Change]) -> None:
        self.revision = changes[-1].revision
        assert self._on_commit is not None
        self._on_commit(changes)

    def _hand_lost(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if self._on_lost is not None:
            self._on_lost(revision)

    # -- the other instances' commits ----------------------------------------------------------

    def _schedule_tick(self) -> None:
        self._tick = asyncio.get_running_loop().call_later(self.tail_interval, self._on_tick)

    def _on_tick(self) -> None:
        assert self._writer is not None
        self._writer.request_catch_up()
        self._schedule_tick()

    # -- writes ------------------------------------------------------------------------------

    async def write(self, ops: list[WriteOp], position: Position | None = None) -> list[Change]:
        """`position`: stored in the same transaction, if the job commits (store/base.py)."""
        assert self._writer is not None, "store is not open"
        return await self._writer.write(ops, position)

    async def position(self, name: str) -> str | None:
        async def read(conn: psycopg.AsyncConnection[Any]) -> str | None:
            cur = await conn.execute("SELECT value FROM positions WHERE name = %s", (name,))
            row = await cur.fetchone()
            return None if row is None else row[0]

        return await self._read(read)

    def submit(self, ops: list[WriteOp], position: Position | None = None) -> asyncio.Future[list[Change]]:
        """`write`, queued at once: change capture hands on transactions in commit order
        without waiting for each to commit, so that they are group-committed together."""
        assert self._writer is not None, "store is not open"
        return self._writer.submit(ops, position)

    # -- reads -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        assert self._pool is not None, "store is not open"
        try:
            async with self._pool.connection() as conn:
                yield conn
        except UNAVAILABLE as exc:
            raise _unreadable(exc) from None

    async def _read(self, fn: Any, *args: Any) -> Any:
        """`fn(conn, *args)` on a pooled connection. Reads change nothing, so one that meets a
        connection the database closed (a restart, an idle timeout) is tried once more on a
        new one rather than failing the client."""
        for attempt in (1, 2):
            try:
                async with self._reading() as conn:
                    return await fn(conn, *args)
            except Problem as problem:
                if problem.reason != "StoreUnavailable" or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def get(self, collection: str, id: str) -> Row | None:
        return await self._read(self._get, collection, id)

    @staticmethod
    async def _get(conn: psycopg.AsyncConnection[Any], collection: str, id: str) -> Row | None:
        cur = await conn.execute(
            "SELECT revision, created_revision, data, expires_at FROM resources "
            f"WHERE collection = %s AND id = %s AND {_LIVE}",
            (collection, id, time.time()),
        )
        row = await cur.fetchone()
        return None if row is None else Row(collection, id, row[0], row[1], row[2], row[3])

    async def list(
        self,
        collection: str,
        flt: Filter | None,
        limit: int,
        after_id: str | None,
        id: str | None = None,
    ) -> Page:
        return await self._read(self._list, collection, flt, limit, after_id, id)

    async def _list(
        self,
        conn: psycopg.AsyncConnection[Any],
        collection: str,
        flt: Filter | None,
        limit: int,
        after_id: str | None,
        id: str | None,
    ) -> Page:
        # One snapshot for the rows and the revision they are at, however many chunks it takes.
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur = await conn.execute("SELECT value FROM meta WHERE key = 'revision'")
            # One row always (psycopg types fetchone() as optional, hence the ignore).
            (revision,) = await cur.fetchone()  # type: ignore[misc]
            rows: list[Row]
            if id is not None:
                row = await self._get(conn, collection, id)
                rows = [row] if row is not None and (flt is None or flt.matches(row.data)) else []
                return Page(rows, revision, None)
            rows = []
            cursor = after_id or ""
            now = time.time()
            while True:
                cur = await conn.execute(
                    "SELECT id, revision, created_revision, data, expires_at FROM resources "
                    f"WHERE collection = %s AND id > %s AND {_LIVE} ORDER BY id LIMIT %s",
                    (collection, cursor, now, LIST_SCAN_CHUNK),
                )
                chunk = await cur.fetchall()
                for rid, rev, created, data, expires in chunk:
                    cursor = rid
                    row = Row(collection, rid, rev, created, data, expires)
                    if flt is None or flt.matches(row.data):
                        rows.append(row)
                        if len(rows) == limit:
                            cur = await conn.execute(
                                "SELECT 1 FROM resources "
                                f"WHERE collection = %s AND id > %s AND {_LIVE} LIMIT 1",
                                (collection, rid, now),
                            )
                            more = await cur.fetchone()
                            return Page(rows, revision, rid if more else None)
                if len(chunk) < LIST_SCAN_CHUNK:
                    return Page(rows, revision, None)

    async def snapshot(self, collection: str, id: str | None = None) -> PostgresSnapshot:
        """The collection (or one resource) at the current revision, read a page at a time in
        one read transaction of its own (snapshot.py)."""
        assert self._pool is not None, "store is not open"
        try:
            return await PostgresSnapshot(self._pool, collection, id).begin()
        except UNAVAILABLE as exc:
            raise store_unavailable(
                f"the database cannot be read now ({str(exc).strip()}); try again"
            ) from None

    async def unavailable(self) -> str | None:
        """Why writes are refused now, None when they can commit: a write that takes no
        revision goes through the writer once it has failed to reach the database."""
        assert self._writer is not None
        if self._writer.unreachable:
            with contextlib.suppress(Problem):
                await self._writer.write([])
        return self._writer.unreachable or None

    async def read_log(self, after: int, upto: int, collection: str, id: str | None, limit: int) -> LogSlice:
        return await self._read(self._read_log, after, upto, collection, id, limit)

    @staticmethod
    async def _read_log(
        conn: psycopg.AsyncConnection[Any], after: int, upto: int, collection: str, id: str | None, limit: int
    ) -> LogSlice:
        # The horizon and the range in one statement, so in one snapshot: a compaction that
        # commits in between cannot leave a watcher a range with its start cut off unseen.
        by_id = "AND id = %(id)s" if id is not None else ""
        cur = await conn.execute(
            "SELECT m.value, l.revision, l.ts, l.type, l.id, l.created_revision, l.data, l.prev, "
            "l.expires_at FROM meta m LEFT JOIN LATERAL (SELECT revision, ts, type, id, "
            "created_revision, data, prev, expires_at "
            "FROM log WHERE collection = %(collection)s AND revision > %(after)s AND revision <= %(upto)s "
            f"{by_id} ORDER BY revision LIMIT %(limit)s) l ON true WHERE m.key = 'compacted'",
            {"collection": collection, "after": after, "upto": upto, "id": id, "limit": limit},
        )
        rows = await cur.fetchall()
        compacted = rows[0][0]
        if after < compacted:
            raise Problem(410, "Expired", f"revision {after} is older than the history horizon")
        changes = [
            Change(rev, type, collection, rid, created, data, prev, ts, expires_at=expires)
            for _, rev, ts, type, rid, created, data, prev, expires in rows
            if rev is not None
        ]
        scanned_to = changes[-1].revision if len(changes) == limit else upto
        return LogSlice(changes, scanned_to)

    async def committed_revision(self) -> int:
        async def read(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute("SELECT value FROM meta WHERE key = 'revision'")
            # One row always (psycopg types fetchone() as optional, hence the ignore).
            (revision,) = await cur.fetchone()  # type: ignore[misc]
            return revision

        revision: int = await self._read(read)
        if self._writer is not None and revision > self._writer.seen:
            self._writer.request_catch_up()  # someone was told of it: no need to wait for a tick
        return revision

    async def collections(self) -> builtins.list[dict[str, Any]]:
        async def read(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            cur = await conn.execute(
                f"SELECT collection, count(*) FROM resources WHERE {_LIVE} "
                "GROUP BY collection ORDER BY collection",
                (time.time(),),
            )
            return [{"name": name, "count": count} for name, count in await cur.fetchall()]

        return await self._read(read)

    # -- leases ------------------------------------------------------------------------------

    async def lapsed(self, now: float, limit: int) -> builtins.list[tuple[str, str, float]]:
        async def read(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, str, float]]:
            cur = await conn.execute(
                "SELECT collection, id, expires_at FROM resources WHERE expires_at <= %s "
                "ORDER BY expires_at LIMIT %s",
                (now, limit),
            )
            return await cur.fetchall()

        return await self._read(read)

    @contextlib.asynccontextmanager
    async def sweep_turn(self) -> AsyncIterator[bool]:
        """One instance sweeps at a time (a session advisory lock, held through the pass): the
        guarded delete would keep a second sweeper's deletes out anyway, but not its work."""
        key = schema.lock_key(self.schema, "sweep")
        async with self._reading() as conn:
            cur = await conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(key))
            got = await cur.fetchone()
            if not got or not got[0]:
                yield False
                return
            try:
                yield True
            finally:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(key))

    # -- compaction --------------------------------------------------------------------------

    async def compact(self, keep_events: int, keep_seconds: float) -> int:
        """Drop log entries beyond the history horizon; return the compacted revision.

        One instance at a time (a transaction-scoped advisory lock): the others find the lock
        taken and only read the horizon, which every instance's reads check in the same
        snapshot as the log, so a watcher behind it gets 410 on every instance alike."""
        async with self._reading() as conn:
            revision, compacted = await self._read_meta(conn)
            target = compacted
            if keep_events:
                target = max(target, revision - keep_events)
            if keep_seconds:
                cur = await conn.execute(
                    "SELECT max(revision) FROM log WHERE ts < %s", (time.time() - keep_seconds,)
                )
                row = await cur.fetchone()
                if row is not None and row[0] is not None:
                    target = max(target, row[0])
            # In steps, each its own transaction: no transaction holds many rows for long.
            take_turn = sql.SQL("SELECT pg_try_advisory_xact_lock({})").format(
                schema.lock_key(self.schema, "compact")
            )
            while compacted < target:
                step = min(target, compacted + COMPACTION_STEP)
                async with conn.transaction():
                    cur = await conn.execute(take_turn)
                    got = await cur.fetchone()
                    if not got or not got[0]:
                        break  # another instance is at it
                    await conn.execute("DELETE FROM log WHERE revision <= %s", (step,))
                    await conn.execute(
                        "UPDATE meta SET value = greatest(value, %s) WHERE key = 'compacted'", (step,)
                    )
                compacted = step
            self.compacted = (await self._read_meta(conn))[1]
        return self.compacted
