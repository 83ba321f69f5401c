"""OUT to RabbitMQ: each change a persistent message, its revision the `message_id`, published
with publisher confirms (the call returns once the broker has taken it).

RabbitMQ keeps no record a bridge could resume from, so a restarted bridge resumes from the
position it stored after each accepted batch: what was confirmed after that is published again
(at least once; a consumer drops a `message_id` at or below the last it handled). With no
`exchange` the routing key (`subject`) names a durable queue, declared here, on the default
exchange; with one, a durable topic exchange of that name is declared and published to.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import ChannelInvalidStateError

from watchroute.bridges.base import BridgeDown
from watchroute.bridges.config import BridgeConfig, masked_url

TIMEOUT_SECONDS = 5.0
# The client logs every lost connection and failed reconnect with a traceback: the bridge's
# runner says it once per outage, with the status' error.
for _noisy in ("aiormq", "aio_pika"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)
# A channel closed under a publish (the connection lost) is not an AMQPError.
_DOWN = (AMQPError, ChannelInvalidStateError, OSError, TimeoutError)


class RabbitMQSink:
    def __init__(self, name: str, config: BridgeConfig) -> None:
        self.url = config.url
        self.routing_key = config.subject or config.topic or ""
        self.exchange_name = config.exchange or ""
        self._connection: Any = None
        self._exchange: Any = None

    async def connect(self) -> None:
        try:
            self._connection = await aio_pika.connect(self.url, timeout=TIMEOUT_SECONDS)
            channel = await self._connection.channel(publisher_confirms=True)
            if self.exchange_name:
                self._exchange = await channel.declare_exchange(
                    self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                )
            else:
                await channel.declare_queue(self.routing_key, durable=True)
                self._exchange = channel.default_exchange
        except _DOWN as exc:
            await self.close()
            raise BridgeDown(f"RabbitMQ at {masked_url(self.url)}: {str(exc) or type(exc).__name__}") from exc

    async def last_accepted(self) -> int | None:
        return None  # RabbitMQ keeps no record of it: the stored position decides

    async def publish(self, revision: int, event: bytes, headers: Mapping[str, str]) -> None:
        message = aio_pika.Message(
            event,
            message_id=str(revision),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(headers),
        )
        try:
            await self._exchange.publish(message, self.routing_key, timeout=TIMEOUT_SECONDS)
        except _DOWN as exc:
            raise BridgeDown(f"RabbitMQ: {str(exc) or type(exc).__name__}") from exc

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*_DOWN):
                await connection.close()
