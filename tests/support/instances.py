"""Writing to and watching several instances at once (the PostgreSQL instance tests)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx


async def watch_across(urls: list[str], coll: str, since: int, until: asyncio.Future[int]) -> list[tuple]:
    """(revision, id) of every event, reconnecting to the next instance whenever a stream ends
    or breaks, from the last revision seen."""
    got: list[tuple] = []
    resume, turn = since, 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=3)) as c:
        while not (until.done() and resume >= until.result()):
            url = urls[turn % len(urls)]
            turn += 1
            try:
                params: dict[str, str | int | float] = {
                    "watch": "true",
                    "since": resume,
                    "heartbeat": 1,
                    "timeout": 2,
                }
                async with c.stream("GET", f"{url}/v1/{coll}", params=params) as r:
                    if r.status_code != 200:
                        await asyncio.sleep(0.1)
                        continue
                    async for line in r.aiter_lines():
                        event = json.loads(line)
                        resume = event["revision"]
                        if event["type"] != "BOOKMARK":
                            got.append((event["revision"], event["object"]["id"]))
                        if until.done() and resume >= until.result():
                            break
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
    return got


async def write_for(url: str, coll: str, prefix: str, seconds: float, acks: list[tuple]) -> None:
    """PUT new resources for `seconds`; the acknowledged ones go to `acks`, refusals and broken
    connections are simply not acknowledged."""
    deadline = time.monotonic() + seconds
    n = 0
    async with httpx.AsyncClient(timeout=3) as c:
        while time.monotonic() < deadline:
            n += 1
            try:
                r = await c.put(f"{url}/v1/{coll}/{prefix}{n}", json={"n": n})
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 201:
                acks.append((r.json()["revision"], f"{prefix}{n}"))
            else:
                await asyncio.sleep(0.05)
