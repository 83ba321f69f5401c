"""The bridge seam: a broker is a Source (messages into the log) or a Sink (changes out of it).

One file per broker and direction (`sources/<broker>.py`, `sinks/<broker>.py`), chosen by the
URL's scheme (engines.py): a new broker, Kafka say, is one more file each way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Inbound:
    """One broker message on its way into the log."""

    body: bytes
    subject: str  # MQTT topic, NATS subject, RabbitMQ routing key, Redis stream key
    headers: Mapping[str, str]
    # JetStream stream sequence, Redis entry id: stored in the write's transaction; None where
    # the broker acknowledges instead.
    position: str | None
    ack: Callable[[], Awaitable[None]] | None  # called once the write committed (RabbitMQ, MQTT QoS 1)
    # Malformed: dead-letter where the broker has it, else ack and drop.
    reject: Callable[[str], Awaitable[None]] | None


class Source(Protocol):
    """bridges/sources/<broker>.py: made by `engines.source_for(name, config)`."""

    async def connect(self) -> None: ...

    # From just after the stored position (None: the broker's own durable cursor, or now).
    def messages(self, after: str | None) -> AsyncIterator[Inbound]: ...

    async def close(self) -> None: ...


class Sink(Protocol):
    """bridges/sinks/<broker>.py: made by `engines.sink_for(name, config)`."""

    async def connect(self) -> None: ...

    # The broker's own record of the last revision it took (JetStream: the last message id),
    # else None: the runner then resumes from the position it stored.
    async def last_accepted(self) -> int | None: ...

    # Returns once the broker accepted it; raises BridgeDown when it cannot.
    async def publish(self, revision: int, event: bytes, headers: Mapping[str, str]) -> None: ...

    async def close(self) -> None: ...


class BridgeDown(Exception):
    """The broker cannot be reached or refused: the runner pauses and retries with capped backoff."""
