"""The SSE watch route, read with an independent parser (httpx-sse)."""

from __future__ import annotations

import asyncio

import httpx

from tests.support.watching import sse


async def collect(aclient, path, params, n, last_event_id=None):
    out = []
    async for sse_id, event in sse(aclient, path, params, last_event_id):
        out.append((sse_id, event))
        if len(out) == n:
            break
    return out


async def test_headers_and_retry(server):
    async with (
        httpx.AsyncClient(base_url=server.url) as c,
        c.stream("GET", "/v1/s?watch=true&timeout=1", headers={"Accept": "text/event-stream"}) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        body = b"".join([chunk async for chunk in r.aiter_bytes()])
    assert body.startswith(b"retry: ")


async def test_live_changes_carry_ids_and_no_event_field(aclient):
    task = asyncio.create_task(collect(aclient, "/v1/s", {}, 3))
    await asyncio.sleep(0.3)
    await aclient.put("/v1/s/a", json={"v": 1})
    await aclient.patch("/v1/s/a", json={"v": 2}, headers={"Content-Type": "application/merge-patch+json"})
    await aclient.delete("/v1/s/a")
    got = await asyncio.wait_for(task, 5)
    assert [e["type"] for _, e in got] == ["ADDED", "MODIFIED", "DELETED"]
    assert [int(i) for i, _ in got] == [e["revision"] for _, e in got]
    assert got[1][1]["object"]["data"] == {"v": 2}
    assert got[2][1]["object"]["revision"] == got[2][1]["revision"]


async def test_since_and_last_event_id_wins(aclient):
    revs = [(await aclient.put(f"/v1/s/{i}", json={"i": i})).json()["revision"] for i in range(5)]
    got = await collect(aclient, "/v1/s", {"since": revs[1]}, 3)
    assert [e["revision"] for _, e in got] == revs[2:]
    # A reconnecting EventSource keeps its first URL (since=0) and sends Last-Event-ID.
    got = await collect(aclient, "/v1/s", {"since": 0}, 1, last_event_id=revs[3])
    assert got[0][1]["revision"] == revs[4]


async def test_initial_state_then_bookmark_then_live(aclient):
    for i in range(3):
        await aclient.put(f"/v1/s/{i}", json={"i": i})
    await aclient.delete("/v1/s/1")
    task = asyncio.create_task(collect(aclient, "/v1/s", {"initial": "true"}, 4))
    await asyncio.sleep(0.3)
    live = (await aclient.put("/v1/s/9", json={"i": 9})).json()
    got = await asyncio.wait_for(task, 5)
    added = got[:2]
    assert sorted(e["object"]["id"] for _, e in added) == ["0", "2"]
    assert all(i in (None, "") for i, _ in added), "initial events carry no SSE id"
    sse_id, bookmark = got[2]
    assert bookmark["type"] == "BOOKMARK" and bookmark["initial_events_end"] is True
    assert int(sse_id) == bookmark["revision"] == live["revision"] - 1
    assert got[3][1]["object"]["id"] == "9"


async def test_heartbeat_bookmarks_advance_filtered_resume_point(aclient):
    rev = (await aclient.put("/v1/s/x", json={"kind": "other"})).json()["revision"]
    got = await collect(aclient, "/v1/s", {"since": 0, "filter": "kind=wanted", "heartbeat": 1}, 1)
    sse_id, bookmark = got[0]
    assert bookmark == {"type": "BOOKMARK", "revision": rev}
    assert int(sse_id) == rev


async def test_timeout_ends_the_stream(aclient):
    loop = asyncio.get_running_loop()
    started = loop.time()
    got = await asyncio.wait_for(collect(aclient, "/v1/s", {"timeout": 1}, 100), 5)
    assert got == []
    assert 0.9 < loop.time() - started < 3


async def test_single_resource_watch(aclient):
    task = asyncio.create_task(collect(aclient, "/v1/s/a", {}, 2))
    await asyncio.sleep(0.3)
    await aclient.put("/v1/s/b", json={})
    await aclient.put("/v1/s/a", json={"n": 1})
    await aclient.put("/v1/t/a", json={})
    await aclient.put("/v1/s/a", json={"n": 2})
    got = await asyncio.wait_for(task, 5)
    assert [(e["object"]["id"], e["object"]["data"]) for _, e in got] == [("a", {"n": 1}), ("a", {"n": 2})]


async def test_future_revision_and_expired_are_http_errors(make_server):
    srv = make_server(history_events=2, compaction_interval=0.1)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.get("/v1/s", params={"watch": "true", "since": 5})
        assert r.status_code == 400 and r.json()["reason"] == "FutureRevision"
        for i in range(6):
            await c.put(f"/v1/s/{i}", json={})
        for _ in range(50):
            r = await c.get("/v1/s", params={"watch": "true", "since": 1, "timeout": 1})
            if r.status_code == 410:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 410 and r.json()["reason"] == "Expired"
        r = await c.get("/v1/s", params={"watch": "true", "since": 4, "timeout": 1})
        assert r.status_code == 200


async def test_list_parameters_are_checked_on_a_watch_too(aclient):
    sse = {"Accept": "text/event-stream"}
    refused = await aclient.get("/v1/s?watch=true&limit=0", headers=sse)
    assert refused.status_code == (await aclient.get("/v1/s?limit=0")).status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    # A valid one is accepted and the watch streams as usual.
    async with aclient.stream("GET", "/v1/s?watch=true&limit=5&timeout=0.5", headers=sse) as r:
        assert r.status_code == 200
        assert (await r.aread()).startswith(b"retry: ")
