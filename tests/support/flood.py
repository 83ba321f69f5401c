"""A bounded flood for test_security_limits: N watch connection attempts on loopback, each on a
new connection, from one identity. Run as `python -m tests.support.flood URL TOKEN N`; prints the status
counts as JSON. A process of its own, so that the flood's client work does not slow down the
measured client's event loop (only the server is meant to be under test)."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx

CONCURRENCY = 64


async def flood(url: str, token: str, attempts: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits, headers=headers) as http:
        queue = iter(range(attempts))

        async def worker() -> None:
            for _ in queue:
                r = await http.get("/v1/room", params={"watch": "true", "timeout": 0.05})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 60)
    return statuses


if __name__ == "__main__":
    url, token, attempts = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(flood(url, token, attempts))))
