"""Revisions from clients, however absurd, are a 400 and change nothing: 5,000 digits (more than
int() reads) and anything beyond 2**63-1, in every place a client gives one. And a signed token
whose claims hold a lone surrogate is a 401, not a 500."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support.rest import JSON_PATCH, MERGE, assert_problem, store_revision
from tests.support.security_keys import AUDIENCE, ISSUER, SECRET, claims
from tests.support.server import ServerFactory, ServerProcess
from tests.support.ws import recv, send, ws_url

ABSURD = ["9" * 5000, str(2**63), str(2**64 - 1), "0" * 4400 + "1" + "0" * 20]


@pytest.fixture
def c(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_server.url, timeout=10) as client:
        yield client


def test_last_event_id_and_since_on_every_http_watch(c, coll):
    c.put(f"/v1/{coll}/a", json={"v": 1})
    for value in ABSURD:
        for watch, accept in (
            ("true", "text/event-stream"),
            ("true", "application/x-ndjson"),
            ("longpoll", ""),
        ):
            for path in (f"/v1/{coll}", f"/v1/{coll}/a"):
                params = {"watch": watch, "timeout": "1"}
                r = c.get(path, params=params, headers={"Last-Event-ID": value, "Accept": accept})
                body = assert_problem(r, 400, "BadParameter")
                assert "Last-Event-ID" in body["detail"] and len(body["detail"]) < 200
                r = c.get(path, params={**params, "since": value}, headers={"Accept": accept})
                body = assert_problem(r, 400, "BadParameter")
                assert "since" in body["detail"] and len(body["detail"]) < 200
        assert_problem(c.get(f"/v1/{coll}", params={"revision": value}), 400, "BadParameter")
    # the largest revision there can be is a revision, just not one the store has reached
    r = c.get(f"/v1/{coll}", params={"watch": "longpoll", "since": str(2**63 - 1)})
    assert_problem(r, 400, "FutureRevision")


def test_if_match_on_every_write(c, coll):
    c.put(f"/v1/{coll}/a", json={"v": 1})
    before = store_revision(c)
    for value in ABSURD:
        for method, headers, content in (
            ("PUT", {}, b'{"v": 2}'),
            ("PATCH", MERGE, b'{"v": 2}'),
            ("PATCH", JSON_PATCH, b'[{"op": "add", "path": "/v", "value": 2}]'),
            ("DELETE", {}, None),
        ):
            for tag in (f'"{value}"', f'W/"{value}"'):
                r = c.request(method, f"/v1/{coll}/a", content=content, headers={**headers, "If-Match": tag})
                body = assert_problem(r, 400, "BadParameter")
                assert "If-Match" in body["detail"] and len(body["detail"]) < 200
    assert store_revision(c) == before
    assert c.get(f"/v1/{coll}/a").json()["data"] == {"v": 1}


def test_batch_if_match_and_continue_tokens(c, coll):
    c.put(f"/v1/{coll}/a", json={"v": 1})
    before = store_revision(c)
    for value in (2**63, 2**64 - 1):
        op = {"op": "put", "collection": coll, "id": "a", "data": {"v": 2}, "if_match": value}
        body = assert_problem(c.post("/v1/_batch", json={"ops": [op]}), 400, "BadBatch")
        assert "if_match" in body["detail"] and body["op_index"] == 0
        token = base64.urlsafe_b64encode(orjson.dumps({"a": "a", "r": value, "f": None})).decode()
        assert_problem(c.get(f"/v1/{coll}", params={"continue": token}), 400, "BadContinue")
    # a JSON number past 64 bits is refused with the body, before it is read as a float
    raw = b'{"ops": [{"op": "delete", "collection": "%s", "id": "a", "if_match": %s}]}'
    r = c.post("/v1/_batch", content=raw % (coll.encode(), b"9" * 25))
    assert_problem(r, 422, "NumberOutOfRange")
    assert store_revision(c) == before


async def _websocket_refusals(shared_server: ServerProcess, coll: str) -> None:
    for value in ABSURD:
        async with connect(ws_url(shared_server, f"/v1/{coll}?since={value}")) as ws:
            error = await recv(ws)
            assert error["type"] == "ERROR" and error["error"]["reason"] == "BadParameter", error
        async with connect(
            ws_url(shared_server, f"/v1/{coll}"), additional_headers={"Last-Event-ID": value}
        ) as ws:
            error = await recv(ws)
            assert error["type"] == "ERROR" and error["error"]["reason"] == "BadParameter", error
    async with connect(ws_url(shared_server, "/v1/_watch")) as ws:
        for since in [*ABSURD, 2**63, 2**64 - 1]:
            await send(ws, {"op": "subscribe", "sub": "s", "collection": coll, "since": since})
            error = await recv(ws)
            assert error["type"] == "ERROR" and error["sub"] == "s", error
            assert error["error"]["status"] == 400 and error["error"]["reason"] == "BadParameter", error
            assert "since" in error["error"]["detail"]
        # the socket still serves
        await send(ws, {"op": "subscribe", "sub": "ok", "collection": coll, "since": 0})
        event = await recv(ws)
        assert event["sub"] == "ok" and event["type"] != "ERROR", event


def test_since_and_last_event_id_on_websockets(shared_server, coll):
    httpx.put(f"{shared_server.url}/v1/{coll}/a", json={"v": 1})
    asyncio.run(_websocket_refusals(shared_server, coll))


# -- a lone surrogate in a signed token --------------------------------------------------------


@pytest.fixture(scope="module")
def ruled(module_servers: ServerFactory) -> ServerProcess:
    """JWT with a per-owner rule and a per-identity limit: the subject is substituted and used
    as a key."""
    return module_servers(
        "ruled",
        auth="jwt",
        jwt_secret=SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        rules=json.dumps({"notes": "owner=$sub"}),
        rate_limit_identity="1000/s",
    )


SURROGATE_NAMED: dict[str, Any] = {"\ud800": "x"}  # a claim whose name is a lone surrogate


@pytest.mark.parametrize(
    "token_claims",
    [claims(sub="\ud800"), claims(sub="a\udc00b"), claims(team="\ud800"), claims(**SURROGATE_NAMED)],
)
def test_a_token_with_a_lone_surrogate_is_refused(ruled, token_claims):
    token = jwt.encode(token_claims, SECRET)
    good = {"Authorization": f"Bearer {jwt.encode(claims(sub='alice'), SECRET)}"}
    with httpx.Client(base_url=ruled.url, timeout=10) as c:
        before = store_revision_as(c, good)
        auth = {"Authorization": f"Bearer {token}"}
        for method, url, body in (
            ("GET", "/v1/notes", None),
            ("GET", "/v1/notes?watch=longpoll&timeout=0.1", None),
            ("PUT", "/v1/notes/a", b'{"owner": "x"}'),
        ):
            r = c.request(method, url, content=body, headers=auth)
            problem = assert_problem(r, 401, "Unauthorized")
            assert "Unicode" in problem["detail"]
        assert store_revision_as(c, good) == before


def store_revision_as(c: httpx.Client, headers: dict[str, str]) -> int:
    r = c.get("/v1/notes", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["revision"]
