"""Reading watch streams in tests, with independent parsers (httpx-sse for SSE)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse


async def sse(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], last_event_id: int | None = None
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield (sse id, event) from an SSE watch."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    async with aconnect_sse(
        client, "GET", path, params={"watch": "true", **params}, headers=headers
    ) as source:
        source.response.raise_for_status()
        async for message in source.aiter_sse():
            if message.data:
                yield message.id, json.loads(message.data)


async def ndjson(
    client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> AsyncGenerator[dict[str, Any], None]:
    async with client.stream("GET", path, params={"watch": "true", **params}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line:
                yield json.loads(line)


async def longpoll(
    client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    r = await client.get(path, params={"watch": "longpoll", **params})
    r.raise_for_status()
    body = r.json()
    return body["events"], body["revision"]


async def compacted_past(url: str, revision: int, collection: str = "stocks", deadline: float = 10.0) -> None:
    """Wait until the server's history no longer reaches back to `revision` (a watch from there
    is 410), as a test of expired resume points needs before it tries one."""
    async with httpx.AsyncClient(base_url=url) as http:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            params: dict[str, str | int | float] = {"watch": "longpoll", "since": revision, "timeout": 0.05}
            if (await http.get(f"/v1/{collection}", params=params)).status_code == 410:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the log was never compacted")
