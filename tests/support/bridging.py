"""What the bridge tests share: setting a bridge, writing changes, waiting for a status."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

# Servers and brokers share the machine with other suites: a start may take a while.
START_SECONDS = 90.0


def put_bridge(base: str, name: str, **config: Any) -> None:
    r = httpx.put(f"{base}/v1/_bridges/{name}", json=config, timeout=10)
    assert r.status_code in (200, 201), r.text


def status(base: str, name: str) -> dict[str, Any]:
    r = httpx.get(f"{base}/v1/_bridges/{name}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["status"]


def wait_for(check: Callable[[], Any], timeout: float = 60.0, every: float = 0.1, what: str = "") -> Any:
    """`check()`'s first true answer; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or check} not within {timeout} s (last: {last!r})")
        time.sleep(every)


def write_changes(base: str, collection: str, start: int, count: int) -> list[int]:
    """`count` changes of `collection`: puts, a patch and a delete in turn; their revisions."""
    revisions: list[int] = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for n in range(start, start + count):
            rid = f"r{n % 7}"
            if n % 5 == 4:
                r = client.delete(f"/v1/{collection}/{rid}")
                if r.status_code == 404:
                    r = client.put(f"/v1/{collection}/{rid}", json={"n": n})
            else:
                r = client.put(f"/v1/{collection}/{rid}", json={"n": n, "status": "paid" if n % 2 else "new"})
            assert r.status_code in (200, 201), r.text
            revisions.append(int(r.headers["ETag"].strip('"')))
    return revisions
