"""`/metrics` as an operator reads it: deliveries, lag, requests by route, the writer's
histograms, 410s, refusals at zero; and the Grafana dashboard under deploy/ names only
metrics a real server has."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO
from tests.support.metrics import wait_for
from tests.support.server import ServerProcess
from tests.support.watching import longpoll, sse
from watchroute.histogram import Histogram

DASHBOARD = REPO / "deploy" / "grafana" / "watchroute.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc = ServerProcess(tmp_path_factory.mktemp("operator")).start()
    try:
        yield proc.url
    finally:
        proc.stop()


def samples(url: str) -> Samples:
    """Every sample of one scrape, by name and labels."""
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def caught_up(url: str) -> float:
    return value(samples(url), "watchroute_watchers_caught_up")


async def test_deliveries_lag_requests_and_writes_are_counted(url: str, coll: str) -> None:
    received: list[dict[str, Any]] = []

    async def watch(client: httpx.AsyncClient, params: dict[str, str]) -> None:
        async for _, event in sse(client, f"/v1/{coll}", params):
            if event["type"] != "BOOKMARK":
                received.append(event)

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        before = samples(url)
        # One watcher of everything, one whose filter no write matches: parked, its cursor
        # stays where it started, yet it has been given everything there is for it.
        tasks = [
            asyncio.create_task(watch(client, {})),
            asyncio.create_task(watch(client, {"filter": "k=999"})),
        ]
        try:
            await wait_for(lambda: caught_up(url) == 2)
            revisions = []
            for k in range(3):
                r = await client.put(f"/v1/{coll}/doc{k}", json={"k": k})
                assert r.status_code == 201
                revisions.append(r.json()["revision"])
            await wait_for(lambda: len(received) == 3)
            await wait_for(lambda: caught_up(url) == 2)
            during = samples(url)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        events, _ = await longpoll(client, f"/v1/{coll}", {"since": revisions[0] - 1, "timeout": 5})
        assert len(events) == 3
        assert (await client.get(f"/v1/{coll}/absent")).status_code == 404
        assert (await client.get("/no/such/route")).status_code == 404
        assert (await client.head("/ui")).status_code == 200  # a head nobody holds back
    after = samples(url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The three changes once to the unfiltered watcher, then the long-poll's three.
    assert (
        value(during, "watchroute_delivered_events_total")
        - value(before, "watchroute_delivered_events_total")
        == 3
    )
    assert grew("watchroute_delivered_events_total") == 6
    sent = sum(len(json.dumps(e, separators=(",", ":"))) for e in received)
    assert 2 * sent <= grew("watchroute_delivered_bytes_total") < 2 * sent + 4096
    # Both watchers had everything: the filtered one too, though its cursor never moved.
    assert value(during, "watchroute_watcher_lag_max_revisions") == 0
    assert value(during, "watchroute_watcher_lag_revisions_bucket", le="0.0") == 2
    assert value(during, "watchroute_watcher_lag_revisions_gcount") == 2

    put = {"method": "PUT", "route": "/v1/{collection}/{id}"}
    assert grew("watchroute_http_requests_total", **put, status="201") == 3
    watches = {"method": "GET", "route": "/v1/{collection}", "status": "200"}
    assert grew("watchroute_http_requests_total", **watches) == 3  # two streams, one long-poll
    assert (
        grew("watchroute_http_requests_total", method="GET", route="/v1/{collection}/{id}", status="404") == 1
    )
    assert grew("watchroute_http_requests_total", method="GET", route="other", status="404") == 1
    assert grew("watchroute_http_requests_total", method="HEAD", route="/ui", status="200") == 1
    routes = {dict(labels).get("route") for name, labels in after if name == "watchroute_http_requests_total"}
    assert not any(coll in route or "absent" in route for route in routes if route), routes

    # Each PUT observed once in the writer's latency, and in the size of the group it went in.
    assert grew("watchroute_store_write_seconds_count") == 3
    assert grew("watchroute_store_write_seconds_bucket", le="+Inf") == 3
    assert 0 < grew("watchroute_store_write_seconds_sum") < 3 * 2.5
    assert grew("watchroute_store_commit_writes_sum") == 3
    assert 1 <= grew("watchroute_store_commit_writes_count") <= 3


def test_refusals_start_at_zero_and_expired_watches_count(make_server: Any, coll: str) -> None:
    server = make_server(history_events=5, compaction_interval=0.1)
    fresh = samples(server.url)
    for event in ("auth_failed", "denied", "rate_limited", "connection_limited"):
        assert ("watchroute_refusals_total", frozenset({("event", event)})) in fresh, event
        assert value(fresh, "watchroute_refusals_total", event=event) == 0
    for phase in ("start", "behind", "initial"):
        assert value(fresh, "watchroute_expired_total", phase=phase) == 0
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for i in range(20):
            c.put(f"/v1/{coll}/d{i}", json={"i": i}).raise_for_status()
        deadline = time.monotonic() + 10
        while value(samples(server.url), "watchroute_compacted_revision") < 2:
            assert time.monotonic() < deadline, "compaction never ran"
            time.sleep(0.05)
        assert c.get(f"/v1/{coll}", params={"watch": "longpoll", "since": 1}).status_code == 410
        assert c.get(f"/v1/{coll}", params={"watch": "true", "since": 1}).status_code == 410
    after = samples(server.url)
    assert value(after, "watchroute_expired_total", phase="start") == 2
    assert value(after, "watchroute_slow_watchers_ended_total", why="fell_behind") == 0
    assert (
        value(after, "watchroute_http_requests_total", method="GET", route="/v1/{collection}", status="410")
        == 2
    )


def test_the_writer_histograms_count_with_inclusive_bounds() -> None:
    h = Histogram((1, 10))
    for v in (0.5, 1, 1.5, 10, 11):
        h.observe(v)
    assert h.cumulative() == [("1.0", 2), ("10.0", 4), ("+Inf", 5)]
    assert h.sum == 24
    (count,) = [s.value for s in h.family("x", "").samples if s.name == "x_count"]
    assert count == 5


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's PromQL expressions use."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", ())]
    exprs += [v.get("query", "") for v in board.get("templating", {}).get("list", ())]
    assert exprs
    names = set()
    for expr in exprs:
        expr = re.sub(r'"[^"]*"', '""', expr)  # label values and strings
        expr = re.sub(r"\{[^}]*\}", "", expr)  # selectors
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
        expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
        names |= {
            n
            for n in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr)
            if n.startswith(("watchroute_", "process_", "python_"))
        }
    return names


def test_every_metric_the_dashboard_names_exists(url: str) -> None:
    named = dashboard_metrics()
    assert {"watchroute_delivered_events_total", "watchroute_store_write_seconds_bucket"} <= named
    exposed = {name for name, _ in samples(url)}
    assert named <= exposed, f"the dashboard names metrics /metrics has not: {sorted(named - exposed)}"
