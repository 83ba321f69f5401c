"""RabbitMQ in: a durable queue consumed with manual acknowledgements.

A message is acknowledged once its write committed (at least once: a crash between the commit and
the acknowledgement has the broker deliver it again). The consumer's prefetch bounds what is
delivered unacknowledged, and so what one store transaction can take. A rejected message is
`basic.reject`ed without requeue: the broker dead-letters it when the queue has a dead-letter
exchange (`x-dead-letter-exchange`, set by the queue's owner or a policy), and drops it otherwise.

Without `exchange`, the bridge's `topic` is the queue's name. With `exchange`, `topic` is a
routing key (a pattern, for a topic exchange) and the bridge reads a queue of its own,
`watchroute-NAME`, bound to the exchange with it. A queue is declared durable when it does not
exist yet; an existing one is used as it is, whatever its arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelClosed

from watchroute.bridges.base import BridgeDown, Inbound

PREFETCH = 1000  # unacknowledged messages the broker may send ahead of the commits


class RabbitMQSource:
    def __init__(self, name: str, config: Any) -> None:
        self.url = config.url
        self.exchange = config.exchange
        self.routing_key = config.topic
        self.queue_name = f"watchroute-{name}" if config.exchange else config.topic
        self.tag = f"watchroute-{name}"
        self._connection: Any = None
        self._queue: Any = None

    async def connect(self) -> None:
        try:
            self._connection = await aio_pika.connect(self.url, timeout=5)
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            try:
                self._queue = await channel.declare_queue(self.queue_name, passive=True)
            except ChannelClosed:  # no such queue (the channel is closed with the refusal)
                channel = await self._connection.channel()
                await channel.set_qos(prefetch_count=PREFETCH)
                self._queue = await channel.declare_queue(self.queue_name, durable=True)
            if self.exchange:
                await self._queue.bind(self.exchange, routing_key=self.routing_key)
        except (AMQPError, OSError, TimeoutError) as exc:
            raise BridgeDown(f"amqp: {type(exc).__name__}: {exc}") from exc

    async def messages(self, after: str | None) -> AsyncIterator[Inbound]:
        try:
            async with self._queue.iterator(consumer_tag=self.tag) as incoming:
                async for message in incoming:
                    yield _inbound(message)
        except (AMQPError, OSError) as exc:
            raise BridgeDown(f"amqp: {type(exc).__name__}: {exc}") from exc
        raise BridgeDown("amqp: the broker closed the channel")

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(AMQPError, OSError):
                await self._connection.close()
            self._connection = None


def _inbound(message: AbstractIncomingMessage) -> Inbound:
    headers = {str(k): _text(v) for k, v in (message.headers or {}).items()}

    async def ack() -> None:
        await message.ack()

    async def reject(reason: str) -> None:
        await message.reject(requeue=False)

    return Inbound(
        body=message.body,
        subject=message.routing_key or "",
        headers=headers,
        position=None,
        ack=ack,
        reject=reject,
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
