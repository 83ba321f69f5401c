"""Redis Streams in: XREAD of one stream key from the stored entry id.

The entry id is the position, stored with the write in the same transaction, so the stream is
read on from exactly after the last committed entry: no consumer group, whose own cursor (the
pending entries list, XACK) would be a second record of the same thing to keep in step. A first
start, with no position stored, reads from the stream's last entry at connect time on.

An entry's body is its `body` field when it has one (the other fields are its headers), else the
entry itself as a JSON object of its fields (every field is a header as well), so that
`XADD sensors '*' id 7 temp 21` is a document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from watchroute.bridges.base import BridgeDown, Inbound

COUNT = 500  # entries one XREAD returns at most
BLOCK_MS = 1000  # how long one XREAD waits for an entry


class RedisSource:
    def __init__(self, name: str, config: Any) -> None:
        self.url = config.url
        self.key = config.topic
        self._redis: aioredis.Redis | None = None
        self._start = "0-0"

    async def connect(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=5, socket_timeout=BLOCK_MS / 1000 + 5
        )
        try:
            last = await self._redis.xrevrange(self.key, count=1)
        except RedisError as exc:
            raise BridgeDown(f"redis: {exc}") from exc
        self._start = last[0][0].decode() if last else "0-0"

    async def messages(self, after: str | None) -> AsyncIterator[Inbound]:
        assert self._redis is not None
        cursor = after or self._start
        while True:
            try:
                answer = await self._redis.xread({self.key: cursor}, count=COUNT, block=BLOCK_MS)
            except RedisError as exc:
                raise BridgeDown(f"redis: {exc}") from exc
            for _key, entries in answer:
                for entry_id, fields in entries:
                    cursor = entry_id.decode()
                    yield _inbound(self.key, cursor, fields)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def _inbound(key: str, entry_id: str, fields: dict[bytes, bytes]) -> Inbound:
    headers = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    body = fields.get(b"body")
    if body is None:
        body = orjson.dumps(headers)
    else:
        del headers["body"]
    return Inbound(body=body, subject=key, headers=headers, position=entry_id, ack=None, reject=None)
