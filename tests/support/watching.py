"""Reading watch streams in tests, with independent parsers (httpx-sse for SSE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
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
) -> AsyncIterator[dict[str, Any]]:
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
