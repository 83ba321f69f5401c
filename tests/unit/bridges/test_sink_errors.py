"""A broker's error without a message still says what went wrong in the bridge's status."""

from __future__ import annotations

from typing import Any

import pytest

from watchroute.bridges.base import BridgeDown
from watchroute.bridges.config import BridgeConfig
from watchroute.bridges.sinks.nats import JetStreamSink
from watchroute.bridges.sinks.rabbitmq import RabbitMQSink


class _Refusing:
    """A client whose every call fails with an exception that has no message."""

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> None:
            raise TimeoutError()

        return call


async def test_jetstream_timeout_is_named() -> None:
    sink = JetStreamSink(
        "orders", BridgeConfig(direction="out", url="nats://broker", collection="c", subject="s")
    )
    sink._js = _Refusing()
    with pytest.raises(BridgeDown, match=r"^NATS: TimeoutError$"):
        await sink.publish(1, b"{}", {})


async def test_rabbitmq_timeout_is_named() -> None:
    sink = RabbitMQSink(
        "orders", BridgeConfig(direction="out", url="amqp://broker", collection="c", topic="t")
    )
    sink._exchange = _Refusing()
    with pytest.raises(BridgeDown, match=r"^RabbitMQ: TimeoutError$"):
        await sink.publish(1, b"{}", {})
