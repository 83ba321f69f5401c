"""Crashes and stops: kill -9 loses no acknowledged write; SIGTERM ends streams cleanly."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time

import httpx
import psutil
import pytest
import uvicorn

from tests.support.server import ServerProcess
from tests.support.storm import storm, watch_all
from watchroute import create_app


@pytest.mark.slow
async def test_kill_9_during_a_write_storm_loses_no_acknowledged_write(server: ServerProcess):
    acked: dict[int, dict] = {}
    stop = asyncio.Event()
    seen_before_crash: list[dict] = []

    async def watcher() -> None:
        try:
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=5) as c,
                c.stream("GET", "/v1/crash", params={"watch": "true", "since": 0}) as r,
            ):
                async for line in r.aiter_lines():
                    if line:
                        seen_before_crash.append(json.loads(line))
        except httpx.HTTPError:
            pass

    watch_task = asyncio.create_task(watcher())
    writers = asyncio.create_task(storm(server.url, "crash", acked, stop))
    await asyncio.sleep(random.uniform(1.0, 2.0))
    server.kill()
    stop.set()
    await asyncio.wait_for(asyncio.gather(writers, watch_task), 10)
    assert len(acked) > 50, "the storm should have been acknowledged a good number of writes"

    server.start()
    latest = max(acked)
    async with httpx.AsyncClient(base_url=server.url) as c:
        store_revision = (await c.get("/v1/crash")).json()["revision"]
    assert store_revision >= latest
    log = await watch_all(server.url, "crash", 0, store_revision)
    by_revision = {e["revision"]: e["object"] for e in log}
    assert list(by_revision) == list(range(1, store_revision + 1)), "the log has no gap"
    for revision, resource in acked.items():
        assert by_revision[revision] == resource, f"acknowledged write {revision} lost or changed"

    # The watcher that was cut by the crash resumes from its last revision with no gap.
    last_seen = max((e["revision"] for e in seen_before_crash), default=0)
    assert [e["revision"] for e in seen_before_crash] == list(range(1, last_seen + 1))
    rest = await watch_all(server.url, "crash", last_seen, store_revision)
    assert [e["revision"] for e in rest] == list(range(last_seen + 1, store_revision + 1))


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_ends_every_stream_and_exits_quickly(make_server, workers: int):
    server: ServerProcess = make_server(workers=workers)
    async with httpx.AsyncClient(base_url=server.url) as c:
        rev = (await c.put("/v1/t/a", json={})).json()["revision"]

    caught_up = 0

    async def sse_until_end() -> list[str]:
        nonlocal caught_up
        lines = []
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as c,
            c.stream(
                "GET",
                "/v1/t",
                params={"watch": "true", "since": 0},
                headers={"Accept": "text/event-stream"},
            ) as r,
        ):
            async for line in r.aiter_lines():  # ends without error only on a clean end
                lines.append(line)
                caught_up += line == f"id: {rev}"
        return lines

    streams = [asyncio.create_task(sse_until_end()) for _ in range(20)]
    # Stop once every stream holds its event: then each must end cleanly, not be cut.
    deadline = time.monotonic() + 15
    while caught_up < len(streams) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert caught_up == len(streams), f"only {caught_up} of {len(streams)} streams got the event"
    workers_before = psutil.Process(server.pid).children()
    started = time.monotonic()
    took = await asyncio.to_thread(server.stop)
    results = await asyncio.wait_for(asyncio.gather(*streams), 10)
    assert took < 5, f"the server took {took:.1f}s to exit"
    assert not [p for p in workers_before if p.is_running()], "a worker outlived the server"
    assert time.monotonic() - started < 5
    for lines in results:
        assert f"id: {rev}" in lines  # each stream got its event, then a clean end

    # An EventSource reconnects with its Last-Event-ID and misses nothing written meanwhile.
    server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        rev2 = (await c.put("/v1/t/b", json={})).json()["revision"]
    events = await watch_all(server.url, "t", rev, rev2)
    assert [e["revision"] for e in events] == [rev2]


def test_a_stop_asked_for_before_the_app_is_loaded_is_taken(tmp_path):
    # A SIGTERM that comes while uvicorn is still loading the app (a supervisor that gives up
    # at once): the handler must not need what only a loaded app has.
    from watchroute import Settings
    from watchroute.server.serve import WatchrouteServer

    settings = Settings(database=f"sqlite:///{tmp_path / 'w.db'}")
    config = uvicorn.Config(create_app(settings))
    server = WatchrouteServer(config, settings)
    assert not hasattr(config, "loaded_app")
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
