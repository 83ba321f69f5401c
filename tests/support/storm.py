"""A storm of writes until the server dies under it, and a watch that reads every change of a
collection (the crash tests, and the workers' in test_workers.py)."""

from __future__ import annotations

import asyncio
import json

import httpx


async def storm(url: str, coll: str, acked: dict[int, dict], stop: asyncio.Event) -> None:
    """Writers that record each acknowledged write until the server dies under them."""

    async def writer(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 5 == 0:
                        ops = [
                            {"op": "put", "collection": coll, "id": f"w{n}-b{i}-{k}", "data": {"k": k}}
                            for k in range(20)
                        ]
                        r = await c.post("/v1/_batch", json={"ops": ops})
                        if r.status_code == 200:
                            for res in r.json()["results"]:
                                acked[res["revision"]] = res
                    else:
                        r = await c.put(f"/v1/{coll}/w{n}-{i % 7}", json={"i": i})
                        if r.status_code in (200, 201):
                            body = r.json()
                            acked[body["revision"]] = body
                except httpx.HTTPError:
                    return  # the server is gone: what was acknowledged so far is the test's

    await asyncio.gather(*(writer(n) for n in range(4)))


async def watch_all(
    url: str, coll: str, since: int, until: int, opened: asyncio.Event | None = None
) -> list[dict]:
    """Every change event of `coll` after `since` up to `until`, on a connection of its own;
    `opened` is set once the stream has started."""
    events: list[dict] = []
    if since >= until and opened is None:
        return events  # nothing to wait for: no event would come, only a heartbeat's bookmark
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as c,
        c.stream("GET", f"/v1/{coll}", params={"watch": "true", "since": since, "timeout": 20}) as r,
    ):
        if opened is not None:
            opened.set()
        async for line in r.aiter_lines():
            if line:
                event = json.loads(line)
                if event["type"] != "BOOKMARK":
                    events.append(event)
                if event["revision"] >= until:
                    break
    return events
