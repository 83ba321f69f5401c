"""The WebSocket transport, driven with the `websockets` library (not our client) against real
server processes: upgrades on watch URLs, the multiplexed `/v1/_watch`, and what a hostile or
broken peer gets."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.server import ServerProcess
from tests.support.watching import compacted_past
from tests.support.ws import recv, send, ws_url

pytestmark = pytest.mark.timeout(60)


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return info.value.rcvd.code if info.value.rcvd else None


async def put(server: ServerProcess, collection: str, id: str, data: dict[str, Any]) -> int:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.put(f"/v1/{collection}/{id}", json=data)
        assert response.status_code in (200, 201), response.text
        return response.json()["revision"]


# -- an upgraded watch URL ---------------------------------------------------------------------


async def test_collection_url_upgrade_streams_one_event_per_text_message(server):
    async with connect(ws_url(server, "/v1/stocks?watch=true&heartbeat=1")) as ws:
        rev = await put(server, "stocks", "AAPL", {"price": 1})
        await put(server, "other", "X", {})
        message = await ws.recv()
        assert isinstance(message, str)  # a text message
        event = orjson.loads(message)
        while event["type"] == "BOOKMARK" and event["revision"] < rev:  # a heartbeat before the write
            event = await recv(ws)
        assert event == {
            "type": "ADDED",
            "revision": rev,
            "object": {"id": "AAPL", "revision": rev, "created_revision": rev, "data": {"price": 1}},
        }
        # Nothing of the other collection; then a heartbeat that has moved past it (one may come
        # before the other collection's write has committed).
        bookmark = await recv(ws)
        while bookmark == {"type": "BOOKMARK", "revision": rev}:
            bookmark = await recv(ws)
        assert bookmark == {"type": "BOOKMARK", "revision": rev + 1}


async def test_resource_url_upgrade_with_initial_state_then_changes(server):
    first = await put(server, "stocks", "AAPL", {"price": 1})
    await put(server, "stocks", "MSFT", {"price": 2})
    async with connect(ws_url(server, "/v1/stocks/AAPL?initial=true")) as ws:
        initial = await recv(ws)
        assert initial["type"] == "ADDED" and initial["object"]["revision"] == first
        end = await recv(ws)
        assert end["type"] == "BOOKMARK" and end["initial_events_end"] is True
        await put(server, "stocks", "MSFT", {"price": 3})
        rev = await put(server, "stocks", "AAPL", {"price": 4})
        change = await recv(ws)
        assert (change["type"], change["revision"], change["object"]["id"]) == ("MODIFIED", rev, "AAPL")


async def test_since_replays_exactly_the_later_changes_and_timeout_closes_1000(server):
    revs = [await put(server, "stocks", f"s{i}", {"i": i}) for i in range(5)]
    async with connect(ws_url(server, f"/v1/stocks?since={revs[1]}&timeout=1")) as ws:
        got = [(await recv(ws))["revision"] for _ in range(3)]
        assert got == revs[2:]
        assert await closed_with(ws) == 1000


async def test_refused_watch_is_an_error_then_close_4000_plus_status(server):
    async with connect(ws_url(server, "/v1/stocks?since=0&initial=true")) as ws:
        error = await recv(ws)
        assert error["type"] == "ERROR" and error["error"]["status"] == 400
        assert await closed_with(ws) == 4400
    async with connect(ws_url(server, "/v1/stocks?filter=price%3E")) as ws:
        assert (await recv(ws))["error"]["reason"] == "BadFilter"
        assert await closed_with(ws) == 4400


async def test_expired_resume_point_is_410_on_both_endpoints(make_server):
    server = make_server(history_events=5, compaction_interval=0.2)
    for i in range(20):
        await put(server, "stocks", f"s{i}", {"i": i})
    await compacted_past(server.url, 1)
    async with connect(ws_url(server, "/v1/stocks?since=1")) as ws:
        error = await recv(ws)
        assert error["error"]["status"] == 410 and error["error"]["reason"] == "Expired"
        assert await closed_with(ws) == 4410
    # On /v1/_watch the expired subscription ends alone; its sibling keeps delivering.
    async with connect(ws_url(server, "/v1/_watch")) as ws:
        await send(ws, {"op": "subscribe", "sub": "old", "collection": "stocks", "since": 1})
        await send(ws, {"op": "subscribe", "sub": "new", "collection": "stocks"})
        replies = {(m["sub"], m["type"]): m for m in [await recv(ws), await recv(ws)]}
        assert replies[("old", "ERROR")]["error"]["reason"] == "Expired"
        assert ("new", "SUBSCRIBED") in replies
        rev = await put(server, "stocks", "late", {})
        event = await recv(ws)
        assert (event["sub"], event["type"], event["revision"]) == ("new", "ADDED", rev)


async def test_server_restart_closes_with_1012(server):
    async with (
        connect(ws_url(server, "/v1/stocks")) as single,
        connect(ws_url(server, "/v1/_watch")) as many,
    ):
        await send(many, {"op": "subscribe", "sub": "a", "collection": "stocks"})
        assert (await recv(many))["type"] == "SUBSCRIBED"
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        assert await closed_with(single) == 1012
        assert await closed_with(many) == 1012
        await stopping


# -- /v1/_watch --------------------------------------------------------------------------------


async def test_multiplexed_subscriptions_are_tagged_and_unsubscribe_is_final(server):
    base = await put(server, "stocks", "AAPL", {"price": 1})
    async with connect(ws_url(server, "/v1/_watch")) as ws:
        await send(ws, {"op": "subscribe", "sub": "all", "collection": "stocks"})
        await send(ws, {"op": "subscribe", "sub": "dear", "collection": "stocks", "filter": "price>100"})
        await send(ws, {"op": "subscribe", "sub": "bonds", "collection": "bonds", "initial": True})
        replies = [await recv(ws) for _ in range(4)]
        subscribed = {m["sub"]: m["revision"] for m in replies if m["type"] == "SUBSCRIBED"}
        assert subscribed == {"all": base, "dear": base, "bonds": base}
        assert {"sub": "bonds", "type": "BOOKMARK", "revision": base, "initial_events_end": True} in replies

        rev = await put(server, "stocks", "AAPL", {"price": 150})
        events = sorted(([await recv(ws), await recv(ws)]), key=lambda m: m["sub"])
        assert [(m["sub"], m["type"], m["revision"]) for m in events] == [
            ("all", "MODIFIED", rev),
            ("dear", "ADDED", rev),  # it starts matching the filter
        ]

        await send(ws, {"op": "unsubscribe", "sub": "all"})
        assert await recv(ws) == {"sub": "all", "type": "UNSUBSCRIBED"}
        await put(server, "stocks", "AAPL", {"price": 160})
        bond = await put(server, "bonds", "B1", {})
        # The next messages: "dear" sees the stock change, "bonds" the bond; "all" nothing more.
        later = [await recv(ws), await recv(ws)]
        assert sorted(m["sub"] for m in later) == ["bonds", "dear"]
        assert {"sub": "bonds", "type": "ADDED", "revision": bond} == {
            k: v for k, v in later[[m["sub"] for m in later].index("bonds")].items() if k != "object"
        }


async def test_auth_is_acknowledged_and_ping_answered(server):
    async with connect(ws_url(server, "/v1/_watch")) as ws:
        await send(ws, {"op": "auth", "token": "anything"})  # what a token may do: security's tests
        assert (await recv(ws))["type"] == "AUTHENTICATED"
        await send(ws, {"op": "ping"})
        assert await recv(ws) == {"type": "PONG"}


async def test_garbage_gets_errors_and_the_connection_stays_open(server):
    async with connect(ws_url(server, "/v1/_watch")) as ws:
        await send(ws, {"op": "subscribe", "sub": "live", "collection": "stocks"})
        assert (await recv(ws))["type"] == "SUBSCRIBED"
        garbage: list[tuple[str | bytes, str]] = [
            ("{not json", "BadMessage"),
            ("[1, 2]", "BadMessage"),
            ('"subscribe"', "BadMessage"),
            ('{"op": "explode"}', "UnknownOp"),
            ('{"no": "op"}', "UnknownOp"),
            (b"\x00\x01binary", "BadMessage"),
            ('{"op": "subscribe", "collection": "stocks"}', "BadMessage"),  # no sub
            ('{"op": "subscribe", "sub": 7, "collection": "stocks"}', "BadMessage"),
            ('{"op": "unsubscribe", "sub": "nobody"}', "NotSubscribed"),
            ('{"op": "subscribe", "sub": "live", "collection": "stocks"}', "AlreadySubscribed"),
        ]
        for message, reason in garbage:
            await ws.send(message)
            reply = await recv(ws)
            assert reply["type"] == "ERROR" and reply["error"]["reason"] == reason, (message, reply)
            assert "sub" not in reply  # ended no subscription
        # A subscribe that fails ends only itself, named by its sub.
        await send(ws, {"op": "subscribe", "sub": "bad", "collection": "Not A Name"})
        reply = await recv(ws)
        assert (reply["sub"], reply["error"]["reason"]) == ("bad", "BadName")
        await send(ws, {"op": "subscribe", "sub": "bad2", "collection": "stocks", "since": "soon"})
        assert (await recv(ws))["error"]["reason"] == "BadParameter"
        # Still open, and the first subscription still delivers.
        rev = await put(server, "stocks", "AAPL", {"price": 1})
        event = await recv(ws)
        assert (event["sub"], event["revision"]) == ("live", rev)


async def test_oversized_frame_closes_1009_and_the_server_carries_on(make_server):
    server = make_server(ws_max_frame_bytes=4096)
    async with connect(ws_url(server, "/v1/_watch"), max_size=None) as ws:
        await ws.send('{"op": "ping", "pad": "%s"}' % ("x" * 3000))  # under the limit: fine
        assert await recv(ws) == {"type": "PONG"}
        await ws.send("x" * 5000)
        assert await closed_with(ws) == 1009
    async with connect(ws_url(server, "/v1/_watch")) as ws:
        await send(ws, {"op": "ping"})
        assert await recv(ws) == {"type": "PONG"}


async def test_subscriptions_per_connection_are_capped(make_server):
    server = make_server(ws_max_subscriptions=3)
    async with connect(ws_url(server, "/v1/_watch")) as ws:
        for i in range(4):
            await send(ws, {"op": "subscribe", "sub": f"s{i}", "collection": "stocks"})
        replies = {m["sub"]: m for m in [await recv(ws) for _ in range(4)]}
        assert [replies[f"s{i}"]["type"] for i in range(3)] == ["SUBSCRIBED"] * 3
        assert replies["s3"]["type"] == "ERROR"
        assert replies["s3"]["error"]["reason"] == "TooManySubscriptions"
        # Freeing a slot makes room again.
        await send(ws, {"op": "unsubscribe", "sub": "s0"})
        assert (await recv(ws))["type"] == "UNSUBSCRIBED"
        await send(ws, {"op": "subscribe", "sub": "s3", "collection": "stocks"})
        assert (await recv(ws))["type"] == "SUBSCRIBED"


async def test_connection_without_subscriptions_is_closed_when_idle(make_server):
    server = make_server(ws_idle_timeout=0.5)
    async with connect(ws_url(server, "/v1/_watch")) as idle, connect(ws_url(server, "/v1/_watch")) as busy:
        await send(busy, {"op": "subscribe", "sub": "a", "collection": "stocks", "heartbeat": 1})
        assert (await recv(busy))["type"] == "SUBSCRIBED"
        started = time.monotonic()
        assert await closed_with(idle) == 4408
        assert time.monotonic() - started < 3
        # The busy one outlives the idle timeout: its heartbeats keep coming.
        assert (await recv(busy))["type"] == "BOOKMARK"
        assert (await recv(busy))["type"] == "BOOKMARK"


async def test_compression_is_off_by_default_and_on_by_option(server, make_server):
    async with connect(ws_url(server, "/v1/stocks"), compression="deflate") as ws:
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
    compressing = make_server(ws_compression=True)
    async with connect(ws_url(compressing, "/v1/stocks"), compression="deflate") as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        rev = await put(compressing, "stocks", "AAPL", {"price": 1})
        assert (await recv(ws))["revision"] == rev


def test_peer_that_never_answers_pings_is_dropped(make_server):
    """Liveness: a peer that completes the handshake and then goes silent (no pong) is closed."""
    server = make_server(ws_ping_interval=0.5)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            (
                f"GET /v1/stocks HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        received = b""
        started = time.monotonic()
        while chunk := sock.recv(65536):  # never answers the pings
            received += chunk
        assert received.startswith(b"HTTP/1.1 101")
        frames = received[received.index(b"\r\n\r\n") + 4 :]
        assert frames[:1] == b"\x89"  # a ping frame first
        close = frames.rindex(b"\x88")  # and, at the end, a close frame: 1011, keepalive timeout
        assert int.from_bytes(frames[close + 2 : close + 4], "big") == 1011
        assert time.monotonic() - started < 5
