"""`/metrics` against real servers: the figures follow writes, watchers and refusals, in the
format the scraper asks for, and under `--workers` every scrape shows every worker."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import httpx
import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from tests.support.metrics import scrape, wait_for
from tests.support.security_keys import create_apikey
from tests.support.server import ServerProcess
from tests.support.watching import sse
from watchroute.worker_metrics import SLOT_BYTES, WorkerMetrics


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
    assert after["process_resident_memory_bytes"] > 0 and after["process_open_fds"] > 3
    assert "python_gc_collections_total" in after and after["python_info"] == 1
    # Closed watches stop counting.
    await wait_for(lambda: scrape(url)["watchroute_watchers"] == 0)


def test_refusals_are_counted(make_server: Any) -> None:
    server = make_server(auth="apikey")
    _, key = create_apikey(server.database, "metrics", subject="prometheus")
    scraper = {"Authorization": f"Bearer {key}"}  # with authentication on, /metrics asks for it
    # At zero from the start: a rate over a series that appears with its first refusal misses it.
    assert scrape(server.url, scraper, event="auth_failed")["watchroute_refusals_total"] == 0
    for _ in range(3):
        assert httpx.get(server.url + "/v1/anything", timeout=10).status_code == 401
    refused = scrape(server.url, scraper, event="auth_failed")
    assert refused["watchroute_refusals_total"] == 3


def test_openmetrics_when_the_scraper_asks_for_it(server: ServerProcess) -> None:
    r = httpx.get(
        server.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=10
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n") and "watchroute_revision" in r.text


def scrape_workers(url: str, client: httpx.Client | None = None) -> dict[str, dict[str, float]]:
    """One scrape (on a new connection, or on `client`'s), its samples by worker and name (of a
    sample with several, such as one per GC generation, one is kept)."""
    r = (client or httpx).get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    workers: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if "worker" in s.labels:
                workers.setdefault(s.labels["worker"], {})[s.name] = s.value
    return workers


async def test_every_scrape_shows_every_worker_and_a_restarted_one_starts_afresh(
    make_server: Any, coll: str
) -> None:
    server = make_server(workers=2)
    writes = 20
    for i in range(writes):
        revision = httpx.put(f"{server.url}/v1/{coll}/d{i}", json={"n": i}, timeout=10).json()["revision"]

    def whole(scraped: dict[str, dict[str, float]]) -> bool:
        # Both workers, each with the data path's figures, its process's and its collector's,
        # published within the last few seconds, and each has taken every write to its watchers.
        return set(scraped) == {"0", "1"} and all(
            f["watchroute_revision"] >= revision
            and "process_cpu_seconds_total" in f
            and "python_gc_collections_total" in f
            # The families added for operators, each worker's own.
            and {"watchroute_delivered_events_total", "watchroute_store_write_seconds_count"} <= f.keys()
            and "watchroute_watcher_lag_max_revisions" in f
            and f["watchroute_worker_figures_age_seconds"] < 3
            for f in scraped.values()
        )

    # A connection per scrape: the kernel spreads them over both workers, and each answers for
    # both (ten in a row).
    await wait_for(lambda: whole(scrape_workers(server.url)))
    for _ in range(10):
        scraped = scrape_workers(server.url)
        assert whole(scraped), scraped
        assert all(f["watchroute_changes_total"] >= writes for f in scraped.values()), scraped
    first_started = {w: f["process_start_time_seconds"] for w, f in scraped.items()}

    # A worker killed and started again counts from nothing: its figures are its own, not the
    # dead one's, and the other's go on. Until another takes its place, scrapes show the living
    # worker only, not the dead one's last figures: asked on a connection the living one holds
    # (a new connection may be queued for the dead one's socket until its successor is up).
    with httpx.Client(base_url=server.url, timeout=10) as pinned:
        assert pinned.get("/healthz").status_code == 200
        (mine,) = [
            c.laddr.port
            for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == server.port and c.status == psutil.CONN_ESTABLISHED
        ]
        victim = next(
            child
            for child in psutil.Process(server.proc.pid).children()
            if not any(c.raddr and c.raddr.port == mine for c in child.net_connections(kind="tcp"))
        )
        victim.kill()
        await wait_for(lambda: len(scrape_workers(server.url, pinned)) == 1, timeout=5)
    await wait_for(
        lambda: (
            (s := scrape_workers(server.url))
            and whole(s)
            and any(f["process_start_time_seconds"] != first_started[w] for w, f in s.items())
        ),
        timeout=20,
    )
    for _ in range(10):
        scraped = scrape_workers(server.url)
        assert whole(scraped), scraped
        restarted = [w for w, f in scraped.items() if f["process_start_time_seconds"] != first_started[w]]
        assert len(restarted) == 1, scraped
        (kept,) = set(scraped) - set(restarted)
        assert scraped[restarted[0]]["watchroute_changes_total"] < writes
        assert scraped[kept]["watchroute_changes_total"] >= writes


def test_the_shared_region_keeps_what_json_cannot_say_and_shows_nothing_it_cannot_read() -> None:
    region = WorkerMetrics(2)
    region.publish(1, [GaugeMetricFamily(name, "not finite", value=v) for name, v in NOT_FINITE.items()])
    ((worker, _, families),) = region.read()
    read = {f.name: f.samples[0].value for f in families}
    assert worker == 1 and read.keys() == NOT_FINITE.keys()
    assert math.isnan(read["nan"]) and read["inf"] == math.inf and read["minus_inf"] == -math.inf
    # Too big for a slot: nothing is shown for that worker, rather than its last figures as if new.
    region.publish(0, [GaugeMetricFamily("fine", "", value=1)])
    region.publish(1, [GaugeMetricFamily("huge", "x" * SLOT_BYTES, value=1)])
    assert [w for w, _, _ in region.read()] == [0]
    # A slot that does not read as what publish writes leaves that worker out, not the scrape.
    region.publish(1, [GaugeMetricFamily("fine", "", value=2)])
    region._map[SLOT_BYTES + 20 : SLOT_BYTES + 24] = b"\xff\xff\xff\xff"
    assert [w for w, _, _ in region.read()] == [0]
    region.clear(0)
    assert region.read() == []


NOT_FINITE = {"nan": math.nan, "inf": math.inf, "minus_inf": -math.inf}
