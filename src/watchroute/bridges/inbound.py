"""The inbound runner: broker messages become writes on a collection, in the broker's order.

The manager connects the bridge's source and hands it here: the stored position is read, and
each message becomes the write it asks for (bridges/translation.py). Messages that are ready
together are written in one store transaction, with the position of the last one
(`store.write(ops, position=...)`), so that:

- where the broker has positions (JetStream stream sequence, Redis entry id) the position and the
  writes commit together, and a restart reads on from exactly after the last committed message:
  nothing lost, nothing written twice;
- where the broker has acknowledgements (RabbitMQ, MQTT QoS 1) a message is acknowledged only
  once its write committed. A crash between the commit and the acknowledgement has the broker
  deliver it again: at least once, and the window is the time between the two (a merge or put of
  the same body writes the same document again, on a new revision).

A message the bridge cannot write (not JSON, not an object, no id, larger than
max_document_bytes, refused by the collection's schema) is counted (the status' `rejected`), logged
with its reason and never its body, and rejected through the source (dead-lettered where the broker has
it, else acknowledged and dropped): it never stalls the bridge. A broker out of reach (BridgeDown)
ends the runner: the manager pauses the bridge and reconnects with capped backoff, and it reads on
from the stored position or the broker's unacknowledged messages. A store that refuses writes
(its database out of reach) is retried with the same messages, unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from watchroute.bridges.base import BridgeDown, Inbound, Source
from watchroute.bridges.state import Bridge
from watchroute.bridges.translation import Malformed, Rules, translate
from watchroute.core.problems import Problem
from watchroute.store.base import Store, WriteOp
from watchroute.store.ops import MAX_DOCUMENT_BYTES

if TYPE_CHECKING:
    from watchroute.client.backoff import Backoff

log = logging.getLogger("watchroute")

# The most messages one transaction takes: enough to pay the commit once for many, few enough
# that a refused op (which has the rest written again without it) costs little.
MAX_BATCH = 500
# Messages read ahead of the writes: the reader keeps the broker's connection busy meanwhile.
READ_AHEAD = 2 * MAX_BATCH
# At most one line a second about rejected messages, however many arrive: a flood of malformed
# messages must not become a flood of log lines.
REJECT_LOG_SECONDS = 1.0


async def run_inbound(bridge: Bridge, source: Source, store: Store) -> None:
    """Read `source` from the stored position and write each message to the log, for ever.

    Called by the manager with the source connected; raises BridgeDown when the broker goes
    away (the manager reconnects with capped backoff) and returns only when cancelled.
    """
    runner = InboundRunner(bridge, store)
    after = await store.position(bridge.position_name)
    bridge.state.position = after
    await runner.pump(source, after)


def _retry_delays() -> Backoff:
    """The delays between tries of a write the store refused for the moment."""
    # Imported here: importing the client package (httpx, websockets) is a tenth of a server's
    # start, and a server without inbound bridges never retries one.
    from watchroute.client.backoff import Backoff

    return Backoff(initial=0.1, maximum=5.0)


class _StoreRefused(Exception):
    """The store did not take the writes (and not because of one op): try them again."""


class InboundRunner:
    """One inbound bridge's writes, from one connection of its source."""

    def __init__(self, bridge: Bridge, store: Store) -> None:
        self.name = bridge.name
        self.key = bridge.position_name
        self.state = bridge.state
        self.rules = Rules.of(bridge.config, document_limit(store))
        self._store = store
        self._check = bridge.check
        self._unlogged_rejects = 0
        self._reject_logged_at = 0.0

    async def pump(self, source: Source, after: str | None) -> None:
        ready: asyncio.Queue[Inbound | BaseException] = asyncio.Queue(READ_AHEAD)
        reader = asyncio.create_task(self._read(source, after, ready), name=f"bridge-{self.name}-reader")
        try:
            while True:
                batch = [await ready.get()]
                while len(batch) < MAX_BATCH and not ready.empty():
                    batch.append(ready.get_nowait())
                failure = next((m for m in batch if isinstance(m, BaseException)), None)
                messages = [m for m in batch if isinstance(m, Inbound)]
                if messages:
                    await self._commit(messages)
                if failure is not None:
                    raise failure
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(
        self, source: Source, after: str | None, ready: asyncio.Queue[Inbound | BaseException]
    ) -> None:
        try:
            async for message in source.messages(after):
                self.state.received += 1
                await ready.put(message)
            await ready.put(BridgeDown("the broker ended the subscription"))
        except asyncio.CancelledError:
            raise
        except BridgeDown as exc:
            await ready.put(exc)
        except Exception as exc:  # a client library's own error: the connection is not to be trusted
            await ready.put(BridgeDown(f"{type(exc).__name__}: {exc}"))

    async def _commit(self, messages: list[Inbound]) -> None:
        """Writes `messages` in one transaction with the last one's position, then acknowledges
        them; retries while the store refuses, so a message is never acknowledged unwritten."""
        writes: list[tuple[WriteOp, Inbound]] = []
        for message in messages:
            try:
                op = translate(message, self.rules)
            except Malformed as exc:
                await self._reject(message, exc.reason, exc.detail)
                continue
            if op.kind != "delete" and self._check is not None:
                op.check = self._check
            writes.append((op, message))
        position = next((m.position for m in reversed(messages) if m.position is not None), None)
        done: list[Inbound] = []  # written, or a delete of what is already gone
        delay = _retry_delays()
        while writes:
            try:
                await self._write([op for op, _ in writes], position)
                done.extend(m for _, m in writes)
                self.state.written += len(writes)
                break
            except _StoreRefused as exc:
                self.state.error = str(exc)
                await asyncio.sleep(delay.next_delay())
            except Problem as problem:
                refused = getattr(problem, "op", None)
                index = next((i for i, (op, _) in enumerate(writes) if op is refused), None)
                if index is None or problem.reason == "BatchTooLarge":
                    # The job as a whole (what its documents hold in all), not one op: one at a time.
                    await self._one_by_one(writes, position)
                    return
                op, message = writes.pop(index)
                if op.kind == "delete" and problem.status == 404:
                    done.append(message)  # delivered again after its first delete committed
                else:
                    await self._reject(message, _reason_of(problem), problem.detail)
        if not writes and position is not None and self.state.position != position:
            # Every message of the batch refused: their position is kept with no write, so a
            # restart does not read them again (should the store refuse it, they are refused again).
            with contextlib.suppress(Problem, _StoreRefused):
                await self._write([], position)
        if position is not None:
            self.state.position = position
        for message in done:
            if message.ack is not None:
                await _settle(message.ack())

    async def _one_by_one(self, writes: list[tuple[WriteOp, Inbound]], position: str | None) -> None:
        for index, (op, message) in enumerate(writes):
            last = index == len(writes) - 1
            await self._commit_one(op, message, position if last else message.position)

    async def _commit_one(self, op: WriteOp, message: Inbound, position: str | None) -> None:
        delay = _retry_delays()
        while True:
            try:
                await self._write([op], position)
                self.state.written += 1
                break
            except _StoreRefused as exc:
                self.state.error = str(exc)
                await asyncio.sleep(delay.next_delay())
            except Problem as problem:
                if not (op.kind == "delete" and problem.status == 404):
                    await self._reject(message, _reason_of(problem), problem.detail)
                    return
                break
        if position is not None:
            self.state.position = position
        if message.ack is not None:
            await _settle(message.ack())

    async def _write(self, ops: list[WriteOp], position: str | None) -> None:
        try:
            await self._store.write(ops, position=None if position is None else (self.key, position))
        except Problem as problem:
            if getattr(problem, "op", None) is None and problem.status >= 500:
                raise _StoreRefused(problem.detail) from None
            raise
        except (OSError, ConnectionError) as exc:
            raise _StoreRefused(f"{type(exc).__name__}: {exc}") from None

    async def _reject(self, message: Inbound, reason: str, detail: str) -> None:
        self.state.rejected += 1
        now = time.monotonic()
        if now - self._reject_logged_at >= REJECT_LOG_SECONDS:
            more = ""
            if self._unlogged_rejects:
                more = f" ({self._unlogged_rejects} more rejected since the last line)"
            subject = message.subject[:200]
            template = "bridge %s: message on %s rejected (%s): %s%s"
            log.warning(template, self.name, subject, reason, detail, more)
            self._reject_logged_at = now
            self._unlogged_rejects = 0
        else:
            self._unlogged_rejects += 1
        if message.reject is not None:
            await _settle(message.reject(reason))


async def _settle(answer: Awaitable[None]) -> None:
    """An acknowledgement or rejection sent to the broker; a connection lost meanwhile is the
    broker out of reach (it delivers the message again: the at-least-once window)."""
    try:
        await answer
    except BridgeDown:
        raise
    except Exception as exc:
        raise BridgeDown(f"acknowledging: {type(exc).__name__}: {exc}") from exc


def document_limit(store: Store) -> int:
    """The largest document the store takes (max_document_bytes): a larger message is refused
    before it is parsed."""
    limit = getattr(store, "max_document_bytes", None)
    if limit is None:
        limits = getattr(store, "limits", None)  # the PostgreSQL engine: (document, batch)
        limit = limits[0] if limits else MAX_DOCUMENT_BYTES
    return int(limit)


def _reason_of(problem: Problem) -> str:
    """A store's refusal as a rejection reason: SchemaViolation -> schema_violation."""
    if problem.reason == "DocumentTooLarge" or problem.status == 413:
        return "too_large"
    return "".join("_" + c.lower() if c.isupper() else c for c in problem.reason).lstrip("_")
