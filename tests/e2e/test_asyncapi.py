"""`/asyncapi.json`: a valid AsyncAPI 3.0 document (checked against the specification's own JSON
Schema, `tests/data/`), and a true one: what a real server sends on a watch and on `/v1/_watch`
matches the messages it describes, event by event."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema_rs
from websockets.asyncio.client import connect

from tests.support.asyncapi import SPEC_SCHEMA, assert_described, fetch, messages_of, refs, resolve
from tests.support.server import ServerProcess
from tests.support.watching import sse
from tests.support.ws import recv, send, ws_url


def test_the_document_is_valid_asyncapi_3(server: ServerProcess) -> None:
    doc = fetch(server)
    spec = jsonschema_rs.validator_for(json.loads(SPEC_SCHEMA.read_text()))
    assert [e.message for e in spec.iter_errors(doc)] == []
    for ref in refs(doc):
        assert resolve(doc, ref) is not None, ref  # every reference leads somewhere
    host = server.url.removeprefix("http://")
    assert doc["servers"]["http"] == {"host": host, "protocol": "http", "description": "SSE and NDJSON"}
    assert doc["servers"]["ws"]["protocol"] == "ws"
    # The REST document and this one describe a resource alike.
    openapi = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert doc["components"]["schemas"]["Resource"] == openapi["components"]["schemas"]["Resource"]


async def test_what_a_watch_sends_is_described(server: ServerProcess, coll: str) -> None:
    doc = fetch(server)
    described = messages_of(doc, "watchCollection")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await client.put(f"/v1/{coll}/a", json={"tier": "gold", "n": 1})
        seen: list[dict[str, Any]] = []
        params = {"initial": "true", "filter": "tier=gold", "format": "patch"}
        async for _, event in sse(client, f"/v1/{coll}", params):
            seen.append(event)
            assert_described(described, event)
            if len(seen) == 2:  # the initial state, then its end
                await client.put(f"/v1/{coll}/a", json={"tier": "gold", "n": 2})  # a patch
                await client.put(f"/v1/{coll}/a", json={"tier": "lead", "n": 2})  # leaves the filter
                await client.delete(f"/v1/{coll}/a")  # not its business any more
                await client.put(f"/v1/{coll}/b", json={"tier": "gold"})  # joins
            if event.get("object", {}).get("id") == "b":
                break
    kinds = [(e["type"], "patch" in e, e.get("initial_events_end", False)) for e in seen]
    assert kinds == [
        ("ADDED", False, False),
        ("BOOKMARK", False, True),
        ("MODIFIED", True, False),
        ("DELETED", False, False),
        ("ADDED", False, False),
    ]


async def test_what_the_multiplexed_socket_carries_is_described(server: ServerProcess, coll: str) -> None:
    doc = fetch(server)
    sent, answered = messages_of(doc, "sendOps"), messages_of(doc, "receiveAnswers")
    ops: list[dict[str, Any]] = [
        {"op": "subscribe", "sub": "s1", "collection": coll, "initial": True},
        {"op": "ping"},
        {"op": "auth", "token": "anything"},
        {"op": "unsubscribe", "sub": "s1"},
    ]
    received: list[dict[str, Any]] = []
    async with connect(ws_url(server, "/v1/_watch")) as ws:
        await send(ws, ops[0])
        received.append(await recv(ws))  # SUBSCRIBED
        received.append(await recv(ws))  # the initial state's end
        httpx.put(f"{server.url}/v1/{coll}/a", json={"n": 1}, timeout=10)
        received.append(await recv(ws))  # ADDED
        for op in ops[1:]:
            await send(ws, op)
            received.append(await recv(ws))
        await ws.send("not json")
        received.append(await recv(ws))  # an ERROR, and the socket stays open
    for op in ops:
        assert_described(sent, op)
    for message in received:
        assert_described(answered, message)
    assert [m["type"] for m in received] == [
        "SUBSCRIBED",
        "BOOKMARK",
        "ADDED",
        "PONG",
        "AUTHENTICATED",
        "UNSUBSCRIBED",
        "ERROR",
    ]
