"""Reading a server's `/metrics` in tests, with the Prometheus client's own parser."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, headers: dict[str, str] | None = None, **labels: str) -> dict[str, float]:
    """Every sample of one scrape, by name; with `labels`, only the samples that carry them."""
    r = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if all(s.labels.get(k) == v for k, v in labels.items()):
                samples[s.name] = s.value
    return samples


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the figures never got there"
        await asyncio.sleep(0.05)
