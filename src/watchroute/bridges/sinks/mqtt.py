"""OUT to MQTT: each change a QoS 1 message (MQTT 5), the headers as user properties.

The topic may name the resource: `sensors/{id}/state` publishes each resource's changes on a
topic of its own. QoS 1 is at least once: the broker acknowledges each message (PUBACK) before
the next is sent, and a restarted bridge publishes again what was acknowledged after the
position it last stored; subscribers drop a `Watchroute-Revision` they have seen. MQTT keeps no
record a bridge could resume from.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from watchroute.bridges.base import BridgeDown
from watchroute.bridges.config import BridgeConfig, masked_url

TIMEOUT_SECONDS = 5.0


class MQTTSink:
    def __init__(self, name: str, config: BridgeConfig) -> None:
        self.url = config.url
        self.topic = config.topic or ""
        self.identifier = f"watchroute-{name}"
        self._client: Any = None

    async def connect(self) -> None:
        parts = urlsplit(self.url)
        client = aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            identifier=self.identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=TIMEOUT_SECONDS,
            tls_context=ssl.create_default_context() if parts.scheme == "mqtts" else None,
        )
        try:
            await client.__aenter__()
        except (aiomqtt.MqttError, OSError) as exc:
            raise BridgeDown(f"MQTT at {masked_url(self.url)}: {exc}") from exc
        self._client = client

    async def last_accepted(self) -> int | None:
        return None  # MQTT keeps no record of it: the stored position decides

    async def publish(self, revision: int, event: bytes, headers: Mapping[str, str]) -> None:
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = list(headers.items())
        properties.ContentType = "application/json"
        topic = self.topic.replace("{id}", headers.get("Watchroute-Id", ""))
        try:
            await self._client.publish(topic, event, qos=1, properties=properties)
        except (aiomqtt.MqttError, OSError) as exc:
            raise BridgeDown(f"MQTT: {exc}") from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.__aexit__(None, None, None)
