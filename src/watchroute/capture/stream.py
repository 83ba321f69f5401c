"""The replication slot, read on a thread of its own: the snapshot copy, then the WAL stream.

psycopg2 (the only maintained Python driver with the replication protocol) is blocking, so one
thread owns the replication connection; it decodes pgoutput and hands whole committed
transactions to the event loop through a bounded queue (it waits while the store is behind, and
PostgreSQL keeps the rest in the slot). It acknowledges to the slot what the loop says is stored
(`applied`), at least every FEEDBACK_SECONDS even when nothing comes, so an idle slot does not
hold WAL.

When there is no slot yet, or the store has no applied position (a copy that never finished),
the thread creates the slot with an exported snapshot and reads every captured table under it
before streaming: the copy holds exactly the transactions committed before the slot's consistent
point, and the stream exactly those after.
"""

from __future__ import annotations

import asyncio
import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import psycopg2
import psycopg2.extras

from watchroute.capture import pgoutput, tables, values
from watchroute.capture.tables import Table
from watchroute.store.base import WriteOp
from watchroute.wire.patches import Stored

log = logging.getLogger("watchroute")

FEEDBACK_SECONDS = 1.0
COPY_CHUNK = 1000


@dataclass(slots=True)
class Truncated:
    """A TRUNCATE of a captured table: the loop turns it into deletes of what the store holds."""

    collection: str


@dataclass(slots=True)
class Transaction:
    position: int  # the commit's end LSN
    # The store's ops for its row changes, made on this thread: the loop only hands them on.
    ops: list[WriteOp | Truncated]
    truncates: bool = False


@dataclass(slots=True)
class _Relation:
    """A captured table as the stream's Relation message last described it."""

    collection: str
    columns: list[tuple[str, values.Convert]]
    key_at: list[int]  # the key columns' places


@dataclass(slots=True)
class CopyChunk:
    collection: str
    rows: list[tuple[str, dict[str, Any]]]


@dataclass(slots=True)
class CopyDone:
    position: int  # the slot's consistent point: the stream starts after it


class Stream:
    def __init__(
        self,
        url: str,
        slot: str,
        publication: str,
        captured: list[Table],
        copy: bool,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
    ) -> None:
        self.url = url
        self.slot = slot
        self.publication = publication
        self.tables = {(t.schema, t.name): t for t in captured}
        self.copy = copy
        self.loop = loop
        self.queue = queue
        self.applied = 0  # set by the loop once a position is stored: what the slot may let go
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._relations: dict[int, _Relation] = {}
        self._thread = threading.Thread(target=self._run, name="watchroute-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread --------------------------------------------------------------------------

    def _hand(self, item: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while not self.stopping.is_set():
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                continue
        future.cancel()
        raise _Stopped

    def _run(self) -> None:
        try:
            conn = psycopg2.connect(
                self.url,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                options=values.SESSION_OPTIONS,
            )
            try:
                self._catalog = psycopg.connect(self.url, autocommit=True, options=values.SESSION_OPTIONS)
                with self._catalog:
                    cur = conn.cursor()
                    if self.copy:
                        self._create_and_copy(cur)
                    self._stream(conn, cur)
            finally:
                conn.close()
        except _Stopped:
            pass
        except BaseException as exc:  # the loop restarts the capture, and logs why
            self.error = exc
        finally:
            self.stopping.set()
            self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

    def _create_and_copy(self, cur: Any) -> None:
        cur.execute(f'CREATE_REPLICATION_SLOT "{self.slot}" LOGICAL pgoutput EXPORT_SNAPSHOT')
        _, consistent_point, snapshot, _ = cur.fetchone()
        with psycopg.connect(self.url, options=values.SESSION_OPTIONS) as copier:
            copier.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            copier.execute("SET TRANSACTION SNAPSHOT %s" % psycopg.sql.quote(snapshot))  # noqa: UP031
            for table in self.tables.values():
                names = list(table.columns)
                select_list = ", ".join(f'"{name}"::text' for name in names)
                key_at = [names.index(k) for k in table.key]
                converts = [table.columns[name] for name in names]
                with copier.cursor(name=f"copy_{table.collection}".replace("-", "_")) as rows:
                    rows.execute(f"SELECT {select_list} FROM {table.qualified}")
                    while chunk := rows.fetchmany(COPY_CHUNK):
                        self._hand(
                            CopyChunk(
                                table.collection,
                                [
                                    (
                                        tables.resource_id([row[i] for i in key_at]),
                                        _document(names, converts, row),
                                    )
                                    for row in chunk
                                ],
                            )
                        )
            copier.rollback()
        self._hand(CopyDone(pgoutput.lsn(consistent_point)))

    def _stream(self, conn: Any, cur: Any) -> None:
        cur.start_replication(
            slot_name=self.slot,
            decode=False,
            options={"proto_version": "1", "publication_names": self.publication},
        )
        acknowledged = -1
        confirmed = 0  # the position last acknowledged to the slot
        last_feedback = 0.0
        changes: list[WriteOp | Truncated] = []
        truncates = False
        handed = 0  # the last transaction handed to the loop
        in_transaction = False
        while not self.stopping.is_set():
            message = cur.read_message()
            now = time.monotonic()
            if self.applied != acknowledged or now - last_feedback >= FEEDBACK_SECONDS:
                idle = message is None and not in_transaction and self.applied >= handed
                if idle:
                    # All that was sent is stored: what the server has decoded since concerned
                    # no captured table (its keepalive, asked for below, says how far that is).
                    # Without this, writes to other tables would leave the slot holding their WAL.
                    confirmed = max(confirmed, cur.wal_end)
                confirmed = max(confirmed, self.applied)
                if confirmed:
                    cur.send_feedback(
                        write_lsn=confirmed, flush_lsn=confirmed, apply_lsn=confirmed, reply=idle
                    )
                acknowledged, last_feedback = self.applied, now
            if message is None:
                select.select([conn], [], [], FEEDBACK_SECONDS / 2)
                continue
            decoded = pgoutput.decode(message.payload)
            if isinstance(decoded, pgoutput.Begin):
                changes, truncates = [], False
                in_transaction = True
            elif isinstance(decoded, pgoutput.RowChange):
                self._change(decoded, changes)
            elif isinstance(decoded, pgoutput.Commit):
                self._hand(Transaction(decoded.end_lsn, changes, truncates))
                changes, handed, in_transaction = [], decoded.end_lsn, False
            elif isinstance(decoded, pgoutput.Relation):
                self._relation(decoded)
            elif isinstance(decoded, pgoutput.Truncate):
                for relid in decoded.relids:
                    if relid in self._relations:
                        changes.append(Truncated(self._relations[relid].collection))
                        truncates = True

    def _relation(self, rel: pgoutput.Relation) -> None:
        table = self.tables.get((rel.schema, rel.name))
        if table is None:
            return
        # A column added since the last Relation message (ALTER TABLE) comes with its type.
        types = tables.array_types(self._catalog, [oid for _, oid in rel.columns])
        names = [name for name, _ in rel.columns]
        self._relations[rel.relid] = _Relation(
            table.collection,
            [(name, values.converter(oid, types)) for name, oid in rel.columns],
            [names.index(k) for k in table.key],
        )

    def _change(self, change: pgoutput.RowChange, ops: list[WriteOp | Truncated]) -> None:
        """The store's ops for one row change, onto `ops`; none for a table not captured."""
        rel = self._relations.get(change.relid)
        if rel is None:
            return
        if change.kind == "delete":
            assert change.old is not None
            ops.append(
                WriteOp("delete", rel.collection, tables.resource_id(_key_texts(change.old, rel.key_at)))
            )
            return
        new = change.new
        assert new is not None
        rid = tables.resource_id(_key_texts(new, rel.key_at))
        if change.old is not None and rel.key_at:
            old_id = tables.resource_id(_key_texts(change.old, rel.key_at))
            if old_id != rid:  # an update of the key: another resource
                ops.append(WriteOp("delete", rel.collection, old_id))
        # A value PostgreSQL left out (an unchanged TOAST value) keeps its column's place, None
        # until the store fills it in.
        data = {
            name: convert(value) if isinstance(value, str) else None
            for (name, convert), value in zip(rel.columns, new, strict=True)
        }
        if pgoutput.UNCHANGED in new:
            unchanged = {
                name for (name, _), value in zip(rel.columns, new, strict=True) if value is pgoutput.UNCHANGED
            }
            ops.append(WriteOp("patch", rel.collection, rid, patch=_with_unchanged(data, unchanged)))
        else:
            ops.append(WriteOp("put", rel.collection, rid, data))


def _with_unchanged(data: dict[str, Any], unchanged: set[str]) -> Callable[[Stored, int], dict[str, Any]]:
    """A patch that gives the columns PostgreSQL left out the values the store holds."""

    def whole(current: Stored, _max_bytes: int) -> dict[str, Any]:
        stored = current.data
        return {name: stored.get(name) if name in unchanged else value for name, value in data.items()}

    return whole


class _Stopped(Exception):
    pass


def _document(names: list[str], converts: list[values.Convert], row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        name: None if value is None else convert(value)
        for name, convert, value in zip(names, converts, row, strict=True)
    }


def _key_texts(row: pgoutput.Tuple, key_at: list[int]) -> list[str]:
    # A key column always arrives as its text: never NULL (a primary key), never an unchanged
    # TOAST value (PostgreSQL always sends the key).
    return [cast(str, row[i]) for i in key_at]
