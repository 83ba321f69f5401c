"""The inbound runner: broker messages become writes on a collection, in the broker's order.

One loop per bridge: connect the source, read the stored position, and for each message the
write it asks for (bridges/translation.py). Messages that are ready together are written in one
store transaction, with the position of the last one (`store.write(ops, position=...)`), so that:

- where the broker has positions (JetStream stream sequence, Redis entry id) the position and the
  writes commit together, and a restart reads on from exactly after the last committed message:
  nothing lost, nothing written twice;
- where the broker has acknowledgements (RabbitMQ, MQTT QoS 1) a message is acknowledged only
  once its write committed. A crash between the commit and the acknowledgement has the broker
  deliver it again: at least once, and the window is the time between the two (a merge or put of
  the same body writes the same document again, on a new revision).

A message the bridge cannot write (not JSON, not an object, no id, larger than
max_document_bytes, refused by the collection's schema) is counted by reason, logged with its
reason and never its body, and rejected through the source (dead-lettered where the broker has
it, else acknowledged and dropped): it never stalls the bridge. A broker out of reach (BridgeDown)
pauses the bridge, which reconnects with capped backoff and reads on from the stored position or
the broker's unacknowledged messages. A store that refuses writes (its database out of reach) is
retried with the same messages, unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from watchroute.bridges.base import BridgeDown, Inbound, Source
from watchroute.bridges.translation import Malformed, Rules, translate
from watchroute.client.backoff import Backoff
from watchroute.problems import Problem
from watchroute.store.base import WriteOp

log = logging.getLogger("watchroute.bridges")

# The most messages one transaction takes: enough to pay the commit once for many, few enough
# that a refused op (which has the rest written again without it) costs little.
MAX_BATCH = 500
# Messages read ahead of the writes: the reader keeps the broker's connection busy meanwhile.
READ_AHEAD = 2 * MAX_BATCH
# At most one line a second about rejected messages, however many arrive: a flood of malformed
# messages must not become a flood of log lines.
REJECT_LOG_SECONDS = 1.0


def position_key(name: str) -> str:
    """The key a bridge's position is stored under, beside the log."""
    return f"bridge:{name}"


@dataclass(slots=True)
class InboundStatus:
    """What GET /v1/_bridges and /metrics show of an inbound bridge."""

    state: str = "starting"  # starting | running | down | stopped
    position: str | None = None  # the last broker position committed with a write
    received: int = 0  # messages read from the broker
    written: int = 0  # messages whose write committed
    rejected: dict[str, int] = field(default_factory=dict)  # by reason
    error: str | None = None  # why the bridge is down, or the last store refusal
    last_message_at: float | None = None  # time.time() of the last message read

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "position": self.position,
            "received": self.received,
            "written": self.written,
            "rejected": self.rejected_total,
            "rejected_by_reason": dict(self.rejected),
            "error": self.error,
            "last_message_at": self.last_message_at,
        }


class _StoreRefused(Exception):
    """The store did not take the writes (and not because of one op): try them again."""


class InboundBridge:
    """Runs one inbound bridge until cancelled."""

    def __init__(
        self,
        name: str,
        config: Any,
        store: Any,
        schemas: Any,
        max_document_bytes: int,
        source_factory: Callable[[], Source],
    ) -> None:
        self.name = name
        self.key = position_key(name)
        self.rules = Rules.of(config, max_document_bytes)
        self.status = InboundStatus()
        self._store = store
        self._check = schemas.check
        self._source_factory = source_factory
        self._backoff = Backoff(initial=0.2, maximum=10.0)
        self._unlogged_rejects = 0
        self._reject_logged_at = 0.0

    async def run(self) -> None:
        try:
            while True:
                source = self._source_factory()
                try:
                    await source.connect()
                    after = await self._store.position(self.key)
                    self.status.position = after
                    self.status.state = "running"
                    self.status.error = None
                    self._backoff.reset()
                    await self._pump(source, after)
                except BridgeDown as exc:
                    self.status.state = "down"
                    self.status.error = str(exc) or type(exc).__name__
                    log.warning("bridge %s: the broker is out of reach: %s", self.name, self.status.error)
                finally:
                    with contextlib.suppress(Exception):
                        await source.close()
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self.status.state = "stopped"

    async def _pump(self, source: Source, after: str | None) -> None:
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
                self.status.received += 1
                self.status.last_message_at = time.time()
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
            if op.kind != "delete":
                op.check = self._check
            writes.append((op, message))
        position = next((m.position for m in reversed(messages) if m.position is not None), None)
        done: list[Inbound] = []  # written, or a delete of what is already gone
        delay = Backoff(initial=0.1, maximum=5.0)
        while writes:
            try:
                await self._write([op for op, _ in writes], position)
                done.extend(m for _, m in writes)
                self.status.written += len(writes)
                break
            except _StoreRefused as exc:
                self.status.error = str(exc)
                await asyncio.sleep(delay.next_delay())
            except Problem as problem:
                refused = getattr(problem, "op", None)
                index = next((i for i, (op, _) in enumerate(writes) if op is refused), None)
                if index is None:  # the job as a whole (the batch's size): write one at a time
                    await self._one_by_one(writes, position)
                    return
                op, message = writes.pop(index)
                if op.kind == "delete" and problem.status == 404:
                    done.append(message)  # delivered again after its first delete committed
                else:
                    await self._reject(message, _reason_of(problem), problem.detail)
        if not writes and position is not None and self.status.position != position:
            # Every message of the batch refused: their position is kept with no write, so a
            # restart does not read them again (a store without a write of no ops skips this).
            with contextlib.suppress(Problem, _StoreRefused, TypeError, ValueError):
                await self._write([], position)
        if position is not None:
            self.status.position = position
        for message in done:
            if message.ack is not None:
                await _settle(message.ack())

    async def _one_by_one(self, writes: list[tuple[WriteOp, Inbound]], position: str | None) -> None:
        for index, (op, message) in enumerate(writes):
            last = index == len(writes) - 1
            await self._commit_one(op, message, position if last else message.position)

    async def _commit_one(self, op: WriteOp, message: Inbound, position: str | None) -> None:
        delay = Backoff(initial=0.1, maximum=5.0)
        while True:
            try:
                await self._write([op], position)
                self.status.written += 1
                break
            except _StoreRefused as exc:
                self.status.error = str(exc)
                await asyncio.sleep(delay.next_delay())
            except Problem as problem:
                if not (op.kind == "delete" and problem.status == 404):
                    await self._reject(message, _reason_of(problem), problem.detail)
                    return
                break
        if position is not None:
            self.status.position = position
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
        self.status.rejected[reason] = self.status.rejected.get(reason, 0) + 1
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


def _reason_of(problem: Problem) -> str:
    """A store's refusal as a rejection reason: SchemaViolation -> schema_violation."""
    if problem.reason == "DocumentTooLarge" or problem.status == 413:
        return "too_large"
    return "".join("_" + c.lower() if c.isupper() else c for c in problem.reason).lstrip("_")
