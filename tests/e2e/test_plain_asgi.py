"""The server on plain ASGI: what it does when uvicorn's internals cannot be used (a uvicorn
outside the tested range, or an attribute gone), forced here by WATCHROUTE_PLAIN_ASGI."""

from __future__ import annotations

import asyncio
import json

import httpx
import orjson
import pytest
import uvicorn
from websockets.asyncio.client import connect

from tests.support.rest import assert_problem
from tests.support.ws import recv, ws_url
from watchroute.server import uvicorn as internals

FALLBACK = "serving on plain ASGI"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.server import ServerProcess

    proc = ServerProcess(tmp_path_factory.mktemp("plain"), plain_asgi=1).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_the_fallback_is_said_once_at_start(plain):
    lines = [line for line in plain.log().splitlines() if FALLBACK in line]
    assert len(lines) == 1, plain.log()
    assert "WATCHROUTE_PLAIN_ASGI is set" in lines[0]


def test_rest_is_served(plain):
    with httpx.Client(base_url=plain.url, timeout=10) as c:
        created = c.put("/v1/notes/a", json={"text": "hi"})
        assert created.status_code == 201
        assert c.get("/v1/notes/a").json()["data"] == {"text": "hi"}
        assert [r["id"] for r in c.get("/v1/notes").json()["items"]] == ["a"]
        assert_problem(c.get("/v1/notes/missing"), 404, "NotFound")
        assert_problem(c.put("/v1/notes/b", content=b"{not json"), 400, "InvalidJSON")
        assert c.get("/v1/notes/b").status_code == 404  # nothing written


def test_an_sse_stream_stays_an_ordinary_response(plain):
    with httpx.Client(base_url=plain.url, timeout=10) as c:
        since = c.put("/v1/feed/x", json={"n": 0}).json()["revision"]
        written = [c.put(f"/v1/feed/{i}", json={"n": i}).json()["revision"] for i in range(5)]
        r = c.get(
            "/v1/feed",
            params={"watch": "true", "since": since, "timeout": 0.5},
            headers={"Accept": "text/event-stream"},
        )
        # Taken over, a stream's response says `Connection: close`; left to uvicorn it does not.
        assert r.status_code == 200 and r.headers.get("connection") != "close"
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        assert [e["revision"] for e in events if e["type"] != "BOOKMARK"] == written
        # The connection was kept: the next request goes on it.
        assert c.get("/healthz").status_code == 200


async def test_a_websocket_watch_is_served(plain):
    async with connect(ws_url(plain, "/v1/live?watch=true&heartbeat=1")) as ws:
        async with httpx.AsyncClient(base_url=plain.url, timeout=10) as c:
            rev = (await c.put("/v1/live/a", json={"v": 1})).json()["revision"]
        event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        while event["type"] == "BOOKMARK":  # a heartbeat that came before the write
            event = await recv(ws)
        assert (event["type"], event["revision"], event["object"]["data"]) == ("ADDED", rev, {"v": 1})
        assert (await recv(ws))["type"] == "BOOKMARK"


def test_a_uvicorn_outside_the_tested_range_is_refused(monkeypatch):
    monkeypatch.delenv(internals.PLAIN_ASGI, raising=False)
    assert internals._why_not() is None  # the installed uvicorn is the one pinned
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")  # the module internals reads
    assert "uvicorn 0.99.0 is not in the tested range" in (internals._why_not() or "")


def test_a_missing_attribute_is_named(monkeypatch):
    monkeypatch.delenv(internals.PLAIN_ASGI, raising=False)
    cycle_methods, cycle_attributes = internals._USED["RequestResponseCycle"]
    used = {**internals._USED, "RequestResponseCycle": (cycle_methods, (*cycle_attributes, "gone"))}
    monkeypatch.setattr(internals, "_USED", used)
    assert "RequestResponseCycle has no gone" in (internals._why_not() or "")
