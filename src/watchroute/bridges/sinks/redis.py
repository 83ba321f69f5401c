"""OUT to Redis Streams: each change an entry of the stream whose id is `{revision}-0`.

The entry id is the revision, so the stream's last entry tells a restarted bridge where it
stopped (`last_accepted`), and an entry published again is refused by XADD (its id is not
greater than the last): a restart neither loses nor repeats. A stream that was emptied (a Redis
that keeps nothing on disk, restarted) takes up from the position the bridge stored.
Fields: `event` (the watch event's JSON) and the headers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from watchroute.bridges.base import BridgeDown
from watchroute.bridges.config import BridgeConfig, masked_url

TIMEOUT_SECONDS = 5.0
_DOWN = (RedisConnectionError, RedisTimeout, OSError, TimeoutError)


class RedisSink:
    def __init__(self, name: str, config: BridgeConfig) -> None:
        self.url = config.url
        self.stream = config.stream or ""
        self._redis: Any = None

    async def connect(self) -> None:
        self._redis = redis.Redis.from_url(
            self.url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
        try:
            await self._redis.ping()
        except _DOWN as exc:
            await self.close()
            raise BridgeDown(f"Redis at {masked_url(self.url)}: {exc}") from exc

    async def last_accepted(self) -> int | None:
        try:
            last = await self._redis.xrevrange(self.stream, count=1)
        except _DOWN as exc:
            raise BridgeDown(f"Redis: {exc}") from exc
        if not last:
            return None
        entry_id = last[0][0].decode()
        return int(entry_id.partition("-")[0])

    async def publish(self, revision: int, event: bytes, headers: Mapping[str, str]) -> None:
        try:
            await self._redis.xadd(self.stream, {"event": event, **headers}, id=f"{revision}-0")
        except ResponseError as exc:
            if "equal or smaller" in str(exc):
                return  # published before (a retry after an unanswered XADD): already accepted
            raise BridgeDown(f"Redis refused XADD: {exc}") from exc
        except (*_DOWN, RedisError) as exc:
            raise BridgeDown(f"Redis: {exc}") from exc

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
