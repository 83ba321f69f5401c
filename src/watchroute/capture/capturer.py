"""Change capture: the application's own tables as collections, written from the WAL.

One instance captures at a time: the one holding a session advisory lock named after the slot,
on a connection of its own. When that instance dies its connection goes, the lock with it, and
the next instance that asks (every LEADER_RETRY_SECONDS) takes over from the slot's position.
Every instance serves the captured collections from the log, like any other.

Exactly once: each committed transaction is one job of the store's writer, so its row changes
take consecutive revisions, and its commit LSN is stored in the same database transaction
(`positions`, name `capture`). After a restart the slot sends again what it was not told was applied;
whatever is at or below the stored position is skipped. Only then is the position acknowledged.
Transactions go to the writer without waiting for each to commit (up to MAX_PENDING), so that
the writer commits many in one group, and are acknowledged in order as they commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg import sql

from watchroute.capture import slot, tables
from watchroute.capture.stream import CopyChunk, CopyDone, Stream, Transaction
from watchroute.store.base import WriteOp
from watchroute.store.postgres.schema import lock_key

if TYPE_CHECKING:
    from watchroute.settings import Settings
    from watchroute.store.postgres import PostgresStore

log = logging.getLogger("watchroute")

LEADER_RETRY_SECONDS = 1.0
QUEUE_ITEMS = 64  # transactions (or copy chunks) decoded ahead of the store
LIST_CHUNK = 1000
MAX_PENDING = 256  # transactions handed to the writer before the oldest must have committed
POSITION = "capture"  # the name of the applied LSN in the store's positions (store/base.py)


def preflight(settings: Settings) -> None:
    """Raise CaptureRefused, saying what to run, if the tables cannot be captured; creates nothing."""
    if not settings.database.startswith(("postgresql://", "postgres://")):
        raise tables.CaptureRefused("--capture needs the PostgreSQL store: --database postgresql://...")
    with psycopg.connect(settings.database, autocommit=True) as conn:
        tables.check(conn, tables.parse(settings.capture))


class Capture:
    def __init__(
        self, settings: Settings, store: PostgresStore, on_epoch: Callable[[], None] = lambda: None
    ) -> None:
        self.url: str = settings.database
        self.schema: str = settings.postgres_schema
        self.slot: str = settings.capture_slot
        self.publication: str = settings.capture_slot
        self.tables = tables.parse(settings.capture)
        self.collections = frozenset(t.collection for t in self.tables)
        self.store = store
        self.leading = False
        self.copying = False  # the leader is taking the tables' copy: not streaming yet
        self.position = 0  # the applied commit LSN
        self.health = slot.Health()
        # The revision the current epoch began after (a new copy, the slot having been lost):
        # a watch of a captured collection from before it is answered 410 and relists.
        self.epoch = 0
        self._on_epoch = on_epoch  # ends the open watches of the captured collections
        self._task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._stream: Stream | None = None
        # Transactions handed to the writer and not yet committed, in commit order.
        self._pending: collections.deque[tuple[int, asyncio.Future[Any]]] = collections.deque()

    async def start(self) -> None:
        """Check every table and make the publication; raises CaptureRefused."""
        await asyncio.to_thread(self._prepare)
        self._task = asyncio.create_task(self._lead_forever(), name="watchroute-capture")
        self._health_task = asyncio.create_task(self._watch_slot(), name="watchroute-capture-slot")

    async def stop(self) -> None:
        for task in (self._health_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watch_slot(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    while True:
                        self.health = await slot.health(conn, self.slot)
                        self._learn_epoch(await self._read_epoch(conn))
                        await asyncio.sleep(slot.HEALTH_SECONDS)
            except (psycopg.Error, OSError):
                await asyncio.sleep(slot.HEALTH_SECONDS)

    def status(self) -> dict[str, Any]:
        """For /readyz."""
        return {"slot": self.slot, "leader": self.leading, "copying": self.copying, **self.health.as_dict()}

    async def _read_epoch(self, conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute(
            sql.SQL("SELECT value FROM {} WHERE key = 'capture_epoch'").format(
                sql.Identifier(self.schema, "meta")
            )
        )
        row = await cur.fetchone()
        return row[0] if row is not None else 0

    def _learn_epoch(self, epoch: int) -> None:
        if epoch > self.epoch:
            self.epoch = epoch
            self._on_epoch()

    async def _begin_epoch(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The slot was lost: what follows is a new copy, not the changes since. The watches of
        the captured collections end now; once the copy is in, a resume from before it is
        answered 410 (`_end_epoch_copy`). The applied position goes, so that a copy cut short
        by a crash is taken again; `capture_epoch` stays, so that it still ends in a new epoch."""
        meta = sql.Identifier(self.schema, "meta")
        async with conn.transaction():
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} SELECT 'capture_epoch', value FROM {} WHERE key = 'revision' "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ).format(meta, meta)
            )
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE name = %s").format(sql.Identifier(self.schema, "positions")),
                (POSITION,),
            )
        self._on_epoch()

    async def _end_epoch_copy(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A new epoch's copy is in: a watch from before now would have missed what changed
        while the slot was lost (every instance learns it from `meta` within HEALTH_SECONDS)."""
        meta = sql.Identifier(self.schema, "meta")
        await conn.execute(
            sql.SQL(
                "UPDATE {} SET value = (SELECT value FROM {} WHERE key = 'revision') "
                "WHERE key = 'capture_epoch'"
            ).format(meta, meta)
        )
        self._learn_epoch(await self._read_epoch(conn))

    def _prepare(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            tables.check(conn, self.tables)
            row = conn.execute(
                sql.SQL("SELECT value FROM {} WHERE key = 'capture_epoch'").format(
                    sql.Identifier(self.schema, "meta")
                )
            ).fetchone()
            self.epoch = row[0] if row is not None else 0
            names = sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in self.tables)
            with conn.transaction():
                conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(self._lock("publication")))
                exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,))
                verb = (
                    "ALTER PUBLICATION {} SET TABLE {}"
                    if exists.fetchone()
                    else "CREATE PUBLICATION {} FOR TABLE {}"
                )
                try:
                    conn.execute(sql.SQL(verb).format(sql.Identifier(self.publication), names))
                except psycopg.errors.InsufficientPrivilege as exc:
                    raise tables.CaptureRefused(
                        f"cannot make the publication {self.publication}: {str(exc).strip()}; run the "
                        "server as the tables' owner, or have their owner run CREATE PUBLICATION "
                        f"{self.publication} FOR TABLE {', '.join(t.qualified for t in self.tables)}"
                    ) from None

    def _lock(self, purpose: str) -> sql.Composed:
        return lock_key(self.schema, f"{purpose}:{self.slot}")

    # -- leadership --------------------------------------------------------------------------

    async def _lead_forever(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    while True:
                        cur = await conn.execute(
                            sql.SQL("SELECT pg_try_advisory_lock({})").format(self._lock("capture"))
                        )
                        # One row always (psycopg types fetchone() as optional, hence the ignore).
                        if (await cur.fetchone())[0]:  # type: ignore[index]
                            break
                        await asyncio.sleep(LEADER_RETRY_SECONDS)
                    self.leading = True
                    log.info(
                        "capturing %s through the slot %s", ", ".join(sorted(self.collections)), self.slot
                    )
                    await self._capture(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "change capture stopped (%s); starting again", str(exc).strip() or type(exc).__name__
                )
            finally:
                self.leading = self.copying = False
                await self._stop_stream()
            await asyncio.sleep(LEADER_RETRY_SECONDS)

    async def _stop_stream(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            await asyncio.to_thread(self._stream.join, 5.0)
            self._stream = None

    async def _capture(self, lock: psycopg.AsyncConnection[Any]) -> None:
        cur = await lock.execute(
            sql.SQL("SELECT value FROM {} WHERE name = %s").format(sql.Identifier(self.schema, "positions")),
            (POSITION,),
        )
        row = await cur.fetchone()
        stored = int(row[0]) if row is not None else None
        state = await slot.health(lock, self.slot)
        if state.wal_status == "lost":  # invalidated past max_slot_wal_keep_size: it cannot stream
            log.warning("the replication slot %s was invalidated: making it again", self.slot)
            await lock.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
            state = slot.Health()
        slot_exists = state.exists
        copy = stored is None or not slot_exists
        if copy and slot_exists:  # a copy that never finished: take it again, from a new slot
            await lock.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        if stored is not None and not slot_exists:
            log.warning(
                "the replication slot %s is gone: a new epoch, copying the captured tables again", self.slot
            )
            await self._begin_epoch(lock)
        self.position = stored or 0
        queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_ITEMS)
        stream = self._stream = Stream(
            self.url, self.slot, self.publication, self.tables, copy, asyncio.get_running_loop(), queue
        )
        stream.applied = self.position
        stream.start()
        # The ids each table's copy brought, where the store held some of it before the copy
        # (a copy taken again): what the copy did not see is gone. A first copy skips that.
        copied: dict[str, set[str]] = {}
        if copy:
            for collection in sorted(self.collections):
                if (await self.store.list(collection, None, 1, None)).rows:
                    copied[collection] = set()
        self.copying = copy
        self._pending.clear()
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), LEADER_RETRY_SECONDS)
            except TimeoutError:
                await self._settle(stream, wait=True)
                await lock.execute("SELECT 1")  # the lock's connection is still there: still leader
                continue
            if item is None:
                await self._settle(stream, wait=True)
                raise stream.error or RuntimeError("the replication stream ended")
            if isinstance(item, Transaction):
                if item.position > self.position:
                    await self._apply(item)
                else:
                    stream.applied = max(stream.applied, item.position)  # applied before a restart
                await self._settle(stream, wait=len(self._pending) >= MAX_PENDING or queue.empty())
            elif isinstance(item, CopyChunk):
                if item.collection in copied:
                    copied[item.collection].update(rid for rid, _ in item.rows)
                await self.store.write(
                    [WriteOp("put", item.collection, rid, data) for rid, data in item.rows]
                )
            elif isinstance(item, CopyDone):
                stale: list[WriteOp] = []
                for collection, ids in copied.items():
                    stale += [
                        WriteOp("delete", collection, rid)
                        for rid in await self._ids(collection)
                        if rid not in ids
                    ]
                await self.store.write(stale, (POSITION, str(item.position)))
                await self._end_epoch_copy(lock)  # a first copy has no epoch to end: no row
                self.position = stream.applied = item.position
                copied = {}
                self.copying = False

    async def _ids(self, collection: str) -> list[str]:
        ids: list[str] = []
        after: str | None = None
        while True:
            page = await self.store.list(collection, None, LIST_CHUNK, after)
            ids += [row.id for row in page.rows]
            after = page.next_after_id
            if after is None:
                return ids

    async def _settle(self, stream: Stream, wait: bool) -> None:
        """Acknowledge what has committed, in order; with `wait`, wait for all of it. A captured
        transaction the store refused stops the capture (it starts again from the stored position)."""
        while self._pending and (wait or self._pending[0][1].done()):
            position, future = self._pending.popleft()
            await future
            stream.applied = max(stream.applied, position)

    async def _apply(self, transaction: Transaction) -> None:
        write_ops: list[WriteOp] = []
        if not transaction.truncates:
            write_ops = cast(list[WriteOp], transaction.ops)
        else:
            assert self._stream is not None
            await self._settle(self._stream, wait=True)  # the ids to delete are read from the store
            for op in transaction.ops:
                if isinstance(op, WriteOp):
                    write_ops.append(op)
                    continue
                # What the store holds, as this transaction's earlier changes left it.
                present = dict.fromkeys(await self._ids(op.collection))
                for earlier in write_ops:
                    if earlier.collection == op.collection:
                        if earlier.kind == "delete":
                            present.pop(earlier.id, None)
                        else:
                            present[earlier.id] = None
                write_ops += [WriteOp("delete", op.collection, rid) for rid in present]
        position = transaction.position
        self._pending.append((position, self.store.submit(write_ops, (POSITION, str(position)))))
        self.position = position
