"""MQTT in: a QoS 1 subscription on a persistent session, acknowledged after the commit.

The session is kept by the broker across disconnects (MQTT 5, clean start off, a session expiry
of a week) under a client id stable per bridge, so what is published while watchroute is down is
delivered when it is back. Each message's PUBACK goes out only once its write committed: a crash
between the two has the broker deliver it again (at least once, within that window).

Why gmqtt and not aiomqtt: aiomqtt acknowledges every message as it hands it over and has no
manual acknowledgement (its paho client has one, not exposed); gmqtt with
`optimistic_acknowledgement=False` sends a message's PUBACK when its `on_message` coroutine
returns, with the reason code it returns, which here is when the runner acknowledges or rejects
the message. That takes MQTT 5 (gmqtt acknowledges at once on 3.1.1).

A rejected message is acknowledged with reason 0x99 (payload format invalid): MQTT has no
dead-letter queue, and an unacknowledged message would be delivered again on every reconnect.
The broker sends at most `receive_maximum` messages unacknowledged: what one transaction takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, PubRecReasonCode

from watchroute.bridges.base import BridgeDown, Inbound

# The runner reconnects (with backoff, and the bridge shown paused meanwhile): gmqtt must not
# also reconnect on its own, or two connections under one client id take the session from each
# other. A negative retry count other than gmqtt's "unlimited" (-1) lets it make none.
NO_RECONNECTS = -2
# What gmqtt says about that choice, and about an acknowledgement of a message whose connection
# has gone (the broker delivers it again): expected here, not worth a warning each.
EXPECTED = ("max number of failed connection attempts", "TRYING WRITE TO CLOSED SOCKET")


class _Expected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(expected in message for expected in EXPECTED)


log = logging.getLogger("watchroute.bridges.mqtt")
log.addFilter(_Expected())
logging.getLogger("gmqtt.mqtt.protocol").addFilter(_Expected())

RECEIVE_MAXIMUM = 1000  # QoS 1 messages the broker may send ahead of their acknowledgements
SESSION_EXPIRY_SECONDS = 7 * 24 * 3600  # how long the broker keeps a bridge's session unconnected
SUBSCRIBE_SECONDS = 10.0


def client_id(bridge: str) -> str:
    return "watchroute-" + re.sub(r"[^A-Za-z0-9_-]", "_", bridge)


class MQTTSource:
    def __init__(self, name: str, config: Any) -> None:
        parts = urlsplit(config.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.tls = parts.scheme == "mqtts"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.topic = config.topic
        self.client_id = client_id(name)
        self._client: Any = None
        self._incoming: asyncio.Queue[Inbound | BridgeDown] = asyncio.Queue()
        self._subscribed = asyncio.Event()

    async def connect(self) -> None:
        client = gmqtt.Client(
            self.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=SESSION_EXPIRY_SECONDS,
            receive_maximum=RECEIVE_MAXIMUM,
            logger=log,
        )
        client.reconnect_retries = NO_RECONNECTS
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        if self.username:
            client.set_auth_credentials(self.username, self.password)
        self._client = client
        try:
            await client.connect(self.host, self.port, ssl=self.tls, keepalive=15, version=MQTTv50)
            client.subscribe(self.topic, qos=1)
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_SECONDS)
        except (OSError, TimeoutError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
            raise BridgeDown(f"mqtt: {type(exc).__name__}: {exc}") from exc

    async def messages(self, after: str | None) -> AsyncIterator[Inbound]:
        while True:
            message = await self._incoming.get()
            if isinstance(message, BridgeDown):
                raise message
            yield message

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Keeps the session: what is unacknowledged is delivered again on the next one.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 5)

    # gmqtt's callbacks -----------------------------------------------------------------------

    async def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        """Runs until the runner settles the message: gmqtt sends the PUBACK with what it returns."""
        settled: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def ack() -> None:
            if not settled.done():
                settled.set_result(PubRecReasonCode.SUCCESS)

        async def reject(reason: str) -> None:
            if not settled.done():
                settled.set_result(PubRecReasonCode.PAYLOAD_FORMAT_INVALID)

        headers = {str(k): str(v) for k, v in (properties or {}).get("user_property", [])}
        self._incoming.put_nowait(Inbound(payload, topic, headers, None, ack, reject))
        return await settled

    def _on_disconnect(self, client: Any, packet: Any, exc: BaseException | None = None) -> None:
        self._incoming.put_nowait(BridgeDown(f"mqtt: disconnected{f': {exc}' if exc else ''}"))

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        granted = list(qos) if isinstance(qos, list | tuple) else [qos]
        if any(q >= 0x80 for q in granted):
            self._incoming.put_nowait(
                BridgeDown(f"mqtt: the broker refused the subscription to {self.topic!r}")
            )
        self._subscribed.set()
