"""OUT to NATS JetStream: each change a message on the subject, its revision the message id.

JetStream drops a second message with the same `Nats-Msg-Id` within the stream's duplicate
window, and the stream's last message on the subject tells a restarted bridge where it stopped
(`last_accepted`): a restart neither loses nor repeats. The stream is made (file storage)
when no stream takes the subject yet, named by `stream` or after the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import nats
from nats.errors import Error as NATSError
from nats.js.errors import NotFoundError

from watchroute.bridges.base import BridgeDown
from watchroute.bridges.config import BridgeConfig, masked_url

TIMEOUT_SECONDS = 5.0  # for the connection and each acknowledgement


def stream_name(name: str) -> str:
    return "WATCHROUTE_" + name.upper().replace("-", "_")


class JetStreamSink:
    def __init__(self, name: str, config: BridgeConfig) -> None:
        self.url = config.url
        self.subject = config.subject or ""
        self.stream = config.stream or stream_name(name)
        self._nc: Any = None
        self._js: Any = None

    async def connect(self) -> None:
        try:
            self._nc = await nats.connect(
                self.url,
                connect_timeout=TIMEOUT_SECONDS,
                allow_reconnect=False,  # the runner reconnects, and resumes from the stream's last message
                max_reconnect_attempts=0,
            )
            self._js = self._nc.jetstream(timeout=TIMEOUT_SECONDS)
            try:
                self.stream = await self._js.find_stream_name_by_subject(self.subject)
            except NotFoundError:
                await self._js.add_stream(name=self.stream, subjects=[self.subject])
        except (NATSError, OSError, TimeoutError) as exc:
            await self.close()
            raise BridgeDown(f"NATS at {masked_url(self.url)}: {str(exc) or type(exc).__name__}") from exc

    async def last_accepted(self) -> int | None:
        try:
            msg = await self._js.get_last_msg(self.stream, self.subject)
        except NotFoundError:
            return None
        except (NATSError, OSError, TimeoutError) as exc:
            raise BridgeDown(f"NATS: {str(exc) or type(exc).__name__}") from exc
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        return int(msg_id) if msg_id.isdigit() else None

    async def publish(self, revision: int, event: bytes, headers: Mapping[str, str]) -> None:
        try:
            await self._js.publish(self.subject, event, headers={**headers, "Nats-Msg-Id": str(revision)})
        except (NATSError, OSError, TimeoutError) as exc:
            raise BridgeDown(f"NATS: {str(exc) or type(exc).__name__}") from exc

    async def publish_many(self, items: Sequence[tuple[int, bytes, Mapping[str, str]]]) -> None:
        """`publish` of each, in order, the acknowledgements awaited together: one round trip for
        a batch instead of one per change. JetStream stores them in the order they arrive on the
        connection; should some fail, the batch is published again and the message ids drop what
        was stored."""
        try:
            pending = [
                await self._js.publish_async(
                    self.subject, event, headers={**headers, "Nats-Msg-Id": str(revision)}
                )
                for revision, event, headers in items
            ]
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await asyncio.gather(*pending)
        except (NATSError, OSError, TimeoutError) as exc:
            raise BridgeDown(f"NATS: {str(exc) or type(exc).__name__}") from exc

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(NATSError, OSError, TimeoutError):
                await nc.close()
