"""NATS JetStream in: a durable pull consumer of one subject, started after the stored position.

The position is the message's stream sequence, stored with the write in the same transaction.
The consumer's own record (its acknowledgement floor) can run behind or ahead of that across a
crash, so on every connect with a stored position the durable consumer is made anew to deliver
from the sequence after it (DeliverPolicy by start sequence): a restart neither repeats nor
skips a message. Messages are still acknowledged after their commit, so the consumer's pending
count (and what `nats consumer info` shows) stays true. Only a first start, with no position
stored, takes the consumer as the server keeps it, or makes one as it connects (before the
bridge is reported running) that delivers what is published from then on.

JetStream has no dead-letter queue: a rejected message is terminated (+TERM), which ends its
redelivery and raises an advisory on the server.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import nats
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from watchroute.bridges.base import BridgeDown, Inbound

FETCH = 256  # messages one pull asks for at most
WAIT_SECONDS = 1.0  # how long one pull waits for a message
ACK_WAIT_SECONDS = 60.0  # a message unacknowledged this long is delivered again


def consumer_name(bridge: str) -> str:
    """The durable consumer's name: the bridge's, with what JetStream names forbid replaced."""
    return "watchroute-" + re.sub(r"[^A-Za-z0-9_-]", "_", bridge)


class JetStreamSource:
    def __init__(self, name: str, config: Any) -> None:
        self.url = config.url
        self.subject = config.topic
        self.durable = consumer_name(name)
        self._nc: Any = None
        self._js: Any = None
        self.stream: str | None = None
        self._yielded = 0  # the last stream sequence handed to the runner on this connection

    async def connect(self) -> None:
        try:
            # The runner reconnects (and reads the position again): the client must not, or a
            # subscription could go on across a gap it does not report.
            self._nc = await nats.connect(
                self.url, allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=0
            )
            self._js = self._nc.jetstream()
            self.stream = await self._js.find_stream_name_by_subject(self.subject)
            # A first start's consumer, made now: it delivers what is published from the moment
            # the bridge is running on, not from whenever its messages are first read.
            try:
                await self._js.consumer_info(self.stream, self.durable)
            except NotFoundError:
                await self._add_consumer(DeliverPolicy.NEW)
        except NotFoundError as exc:
            raise BridgeDown(f"nats: no JetStream stream takes subject {self.subject!r}") from exc
        except (NatsError, OSError) as exc:
            raise BridgeDown(f"nats: {type(exc).__name__}: {exc}") from exc

    async def messages(self, after: str | None) -> AsyncIterator[Inbound]:
        try:
            subscription = await self._subscribe(after)
        except (NatsError, OSError) as exc:
            raise BridgeDown(f"nats: {type(exc).__name__}: {exc}") from exc
        while True:
            try:
                batch = await subscription.fetch(FETCH, timeout=WAIT_SECONDS)
            except NatsTimeout:
                if self._nc.is_closed:
                    raise BridgeDown("nats: the connection closed") from None
                continue
            except (NatsError, OSError) as exc:
                raise BridgeDown(f"nats: {type(exc).__name__}: {exc}") from exc
            for msg in batch:
                sequence = msg.metadata.sequence.stream
                if sequence <= self._yielded:
                    # Delivered again (its ack wait ran out while it waited for its write): the
                    # first delivery is on its way and is the one acknowledged.
                    continue
                self._yielded = sequence
                yield Inbound(
                    body=msg.data,
                    subject=msg.subject,
                    headers=dict(msg.headers or {}),
                    position=str(sequence),
                    ack=msg.ack,
                    reject=_terminate(msg),
                )

    async def _subscribe(self, after: str | None) -> Any:
        assert self.stream is not None
        if after is not None:
            # From the sequence after the stored position, whatever the consumer's own record says.
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(self.stream, self.durable)
            await self._add_consumer(DeliverPolicy.BY_START_SEQUENCE, int(after) + 1)
        return await self._js.pull_subscribe_bind(self.durable, self.stream)

    async def _add_consumer(self, policy: DeliverPolicy, start: int | None = None) -> None:
        assert self.stream is not None
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_SECONDS,
            max_ack_pending=-1,
            deliver_policy=policy,
            opt_start_seq=start,
        )
        await self._js.add_consumer(self.stream, config)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(NatsError, OSError):
                await self._nc.close()
        self._nc = None


def _terminate(msg: Any) -> Any:
    async def reject(reason: str) -> None:
        await msg.term()

    return reject
