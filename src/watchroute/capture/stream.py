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
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
import psycopg2
import psycopg2.extras

from watchroute.capture import pgoutput, tables, values
from watchroute.capture.tables import Table

log = logging.getLogger("watchroute")

FEEDBACK_SECONDS = 1.0
COPY_CHUNK = 1000


@dataclass(slots=True)
class Captured:
    """One row change, ready for the store."""

    type: str  # "upsert" | "delete" | "truncate"
    collection: str
    id: str = ""
    data: dict[str, Any] | None = None
    unchanged: list[str] = field(default_factory=list)  # TOAST columns PostgreSQL left out
    old_id: str | None = None  # the id before an update that changed the key


@dataclass(slots=True)
class Transaction:
    position: int  # the commit's end LSN
    changes: list[Captured]


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
        self._relations: dict[int, tuple[Table, list[tuple[str, values.Convert]]]] = {}
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
        changes: list[Captured] = []
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
                changes = []
                in_transaction = True
            elif isinstance(decoded, pgoutput.RowChange):
                change = self._change(decoded)
                if change is not None:
                    changes.extend(change)
            elif isinstance(decoded, pgoutput.Commit):
                self._hand(Transaction(decoded.end_lsn, changes))
                changes, handed, in_transaction = [], decoded.end_lsn, False
            elif isinstance(decoded, pgoutput.Relation):
                self._relation(decoded)
            elif isinstance(decoded, pgoutput.Truncate):
                for relid in decoded.relids:
                    if relid in self._relations:
                        changes.append(Captured("truncate", self._relations[relid][0].collection))

    def _relation(self, rel: pgoutput.Relation) -> None:
        table = self.tables.get((rel.schema, rel.name))
        if table is None:
            return
        # A column added since the last Relation message (ALTER TABLE) comes with its type.
        types = tables.array_types(self._catalog, [oid for _, oid in rel.columns])
        self._relations[rel.relid] = (
            table,
            [(name, values.converter(oid, types)) for name, oid in rel.columns],
        )

    def _change(self, change: pgoutput.RowChange) -> list[Captured] | None:
        known = self._relations.get(change.relid)
        if known is None:
            return None
        table, columns = known
        names = [name for name, _ in columns]
        key_at = [names.index(k) for k in table.key]
        if change.kind == "delete":
            assert change.old is not None
            return [Captured("delete", table.collection, tables.resource_id(_key_texts(change.old, key_at)))]
        assert change.new is not None
        new = change.new
        rid = tables.resource_id(_key_texts(new, key_at))
        unchanged = [name for name, value in zip(names, new, strict=True) if value is pgoutput.UNCHANGED]
        # An unchanged TOAST value keeps its column's place (None until the store fills it in).
        data = {
            name: convert(value) if isinstance(value, str) else None
            for (name, convert), value in zip(columns, new, strict=True)
        }
        upsert = Captured("upsert", table.collection, rid, data, unchanged)
        if change.old is not None and key_at:
            old_id = tables.resource_id(_key_texts(change.old, key_at))
            if old_id != rid:
                upsert.old_id = old_id
        return [upsert]


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
