"""NDJSON streams, line by line, and long-poll cursors."""

from __future__ import annotations

import asyncio
import json

from tests.support.watching import longpoll, ndjson


async def test_ndjson_is_one_event_per_line(server, aclient):
    async with aclient.stream("GET", "/v1/n?watch=true&timeout=1&since=0") as r:
        assert r.headers["content-type"] == "application/x-ndjson"
    await aclient.put("/v1/n/a", json={"x": 1})
    await aclient.put("/v1/n/a", json={"x": 2})
    lines = []
    async with aclient.stream("GET", "/v1/n?watch=true&since=0&timeout=1") as r:
        async for line in r.aiter_lines():
            lines.append(line)
    assert len(lines) == 2
    assert [json.loads(line)["type"] for line in lines] == ["ADDED", "MODIFIED"]


async def test_ndjson_filter_membership(aclient):
    events = []

    async def watch():
        async for e in ndjson(aclient, "/v1/m", {"filter": "state=open"}):
            events.append(e)
            if len(events) == 3:
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    await aclient.put("/v1/m/1", json={"state": "closed"})  # never matched: not seen
    await aclient.put("/v1/m/1", json={"state": "open"})  # starts matching: ADDED
    await aclient.put("/v1/m/1", json={"state": "open", "n": 1})  # keeps matching: MODIFIED
    await aclient.put("/v1/m/1", json={"state": "closed"})  # stops matching: DELETED, new state
    await asyncio.wait_for(task, 5)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[2]["object"]["data"] == {"state": "closed"}


async def test_longpoll_cursor_sees_every_change_once(aclient):
    since = (await aclient.get("/v1/lp")).json()["revision"]
    seen = []
    for batch in ([1, 2], [3], [4, 5, 6]):
        for i in batch:
            await aclient.put(f"/v1/lp/{i}", json={"i": i})
        events, since = await longpoll(aclient, "/v1/lp", {"since": since, "timeout": 5})
        seen += [e["object"]["data"]["i"] for e in events]
    assert seen == [1, 2, 3, 4, 5, 6]


async def test_longpoll_waits_then_answers_on_a_change(aclient):
    since = (await aclient.get("/v1/lp")).json()["revision"]
    poll = asyncio.create_task(longpoll(aclient, "/v1/lp", {"since": since, "timeout": 10}))
    await asyncio.sleep(0.5)
    assert not poll.done()
    rev = (await aclient.put("/v1/lp/x", json={})).json()["revision"]
    events, revision = await asyncio.wait_for(poll, 5)
    assert [e["revision"] for e in events] == [rev] and revision == rev


async def test_longpoll_empty_after_timeout(aclient):
    since = (await aclient.get("/v1/lp")).json()["revision"]
    events, revision = await longpoll(aclient, "/v1/lp", {"since": since, "timeout": 1})
    assert events == [] and revision >= since


async def test_longpoll_initial(aclient):
    await aclient.put("/v1/lp/a", json={"a": 1})
    events, revision = await longpoll(aclient, "/v1/lp", {"initial": "true"})
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["initial_events_end"] is True and events[1]["revision"] == revision
