"""Scheme -> the Source or Sink of its broker: one module per broker and direction.

Modules are imported when a bridge of their scheme is made, so a server without bridges loads
no broker client. A Kafka bridge would be `sources/kafka.py` and `sinks/kafka.py` (aiokafka),
one line here for each, and "kafka" in config.SCHEMES.
"""

from __future__ import annotations

import importlib
from typing import Any

from watchroute.bridges.base import Sink, Source
from watchroute.bridges.config import BridgeConfig

# scheme -> "module:Class"; each class is made with (name, config).
SOURCES: dict[str, str] = {
    "mqtt": "watchroute.bridges.sources.mqtt:MQTTSource",
    "mqtts": "watchroute.bridges.sources.mqtt:MQTTSource",
    "nats": "watchroute.bridges.sources.nats:JetStreamSource",
    "tls": "watchroute.bridges.sources.nats:JetStreamSource",
    "amqp": "watchroute.bridges.sources.rabbitmq:RabbitMQSource",
    "amqps": "watchroute.bridges.sources.rabbitmq:RabbitMQSource",
    "redis": "watchroute.bridges.sources.redis:RedisSource",
    "rediss": "watchroute.bridges.sources.redis:RedisSource",
}
SINKS: dict[str, str] = {
    "mqtt": "watchroute.bridges.sinks.mqtt:MQTTSink",
    "mqtts": "watchroute.bridges.sinks.mqtt:MQTTSink",
    "nats": "watchroute.bridges.sinks.nats:JetStreamSink",
    "tls": "watchroute.bridges.sinks.nats:JetStreamSink",
    "amqp": "watchroute.bridges.sinks.rabbitmq:RabbitMQSink",
    "amqps": "watchroute.bridges.sinks.rabbitmq:RabbitMQSink",
    "redis": "watchroute.bridges.sinks.redis:RedisSink",
    "rediss": "watchroute.bridges.sinks.redis:RedisSink",
    "http": "watchroute.bridges.sinks.webhook:WebhookSink",
    "https": "watchroute.bridges.sinks.webhook:WebhookSink",
}


def _make(table: dict[str, str], name: str, config: BridgeConfig, what: str) -> Any:
    target = table.get(config.scheme)
    if target is None:
        raise NotImplementedError(f"no {what} for {config.scheme}://")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the broker's client library is missing: say so, not that the module is
        raise NotImplementedError(f"no {what} for {config.scheme}:// in this build") from None
    return getattr(module, class_name)(name, config)


def source_for(name: str, config: BridgeConfig) -> Source:
    """The Source of an IN bridge. NotImplementedError when its broker has none."""
    return _make(SOURCES, name, config, "source")


def sink_for(name: str, config: BridgeConfig) -> Sink:
    """The Sink of an OUT bridge. NotImplementedError when its broker has none."""
    return _make(SINKS, name, config, "sink")
