"""`/metrics` against real servers: the figures follow writes, watchers and refusals, in the
format the scraper asks for, and under `--workers` each worker labels its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .server import ServerProcess
from .watching import sse


def scrape(url: str, **labels: str) -> dict[str, float]:
    """Every sample of one scrape, by name; with `labels`, only the samples that carry them."""
    r = httpx.get(url + "/metrics", timeout=10)
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


async def test_figures_follow_writes_and_watchers(server: ServerProcess, coll: str) -> None:
    url = server.url
    received = [0, 0, 0]

    async def watch(i: int, client: httpx.AsyncClient) -> None:
        async for _, event in sse(client, f"/v1/{coll}", {}):
            if event["type"] == "MODIFIED" or event["type"] == "ADDED":
                received[i] += 1

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        tasks = [asyncio.create_task(watch(i, client)) for i in range(3)]
        try:
            await wait_for(lambda: scrape(url)["watchroute_watchers_caught_up"] == 3)
            before = scrape(url)
            revisions = []
            for k in range(5):
                r = await client.put(f"/v1/{coll}/doc{k % 2}", json={"k": k})
                assert r.status_code in (200, 201)
                revisions.append(r.json()["revision"])
            await wait_for(lambda: received == [5, 5, 5])
            await wait_for(lambda: scrape(url)["watchroute_watchers_caught_up"] == 3)
            after = scrape(url)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def grew(name: str) -> float:
        return after[name] - before[name]

    assert after["watchroute_revision"] == revisions[-1]
    assert after["watchroute_watchers"] == 3
    assert grew("watchroute_commits_total") == 5 and grew("watchroute_changes_total") == 5
    # Each commit reached each of the three caught-up watchers: a write from the hub, or a
    # wake-up when the watcher was busy.
    assert grew("watchroute_hub_pushes_total") + grew("watchroute_hub_wakeups_total") == 15
    assert after["watchroute_window_first_revision"] <= revisions[0]
    assert after["watchroute_window_events"] >= 5
    assert after["watchroute_revisions_lost_total"] == 0
    assert after["process_resident_memory_bytes"] > 0
    # Closed watches stop counting.
    await wait_for(lambda: scrape(url)["watchroute_watchers"] == 0)


def test_refusals_are_counted_and_metrics_stay_public(make_server: Any) -> None:
    server = make_server(auth="apikey")
    assert "watchroute_refusals_total" not in scrape(server.url, event="auth_failed")
    for _ in range(3):
        assert httpx.get(server.url + "/v1/anything", timeout=10).status_code == 401
    refused = scrape(server.url, event="auth_failed")
    assert refused["watchroute_refusals_total"] == 3


def test_openmetrics_when_the_scraper_asks_for_it(server: ServerProcess) -> None:
    r = httpx.get(
        server.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=10
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n") and "watchroute_revision" in r.text


async def test_each_worker_labels_its_own_figures(make_server: Any, coll: str) -> None:
    server = make_server(workers=2)
    r = httpx.put(f"{server.url}/v1/{coll}/a", json={"n": 1}, timeout=10)
    revision = r.json()["revision"]
    seen: dict[str, float] = {}
    # A connection per scrape: the kernel spreads them over both workers (all forty on one: a
    # chance of 2 in a million million).
    for _ in range(40):
        for worker in ("0", "1"):
            figures = scrape(server.url, worker=worker)
            if "watchroute_revision" in figures:
                seen[worker] = figures["watchroute_revision"]
        if len(seen) == 2 and min(seen.values()) >= revision:
            break
        await asyncio.sleep(0.05)
    # Both answered, each for itself, and each had taken the commit to its watchers.
    assert set(seen) == {"0", "1"} and min(seen.values()) >= revision, seen
