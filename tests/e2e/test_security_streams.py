"""Long-lived credentials and browsers: a stream whose token expires ends with an ERROR, the
multiplexed WebSocket refreshes its token in place, and foreign origins get no ambient access."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.security_keys import AUDIENCE, SECRET, hs_token
from tests.support.server import ServerFactory, ServerProcess
from tests.support.ws import recv, send, ws_url

pytestmark = pytest.mark.timeout(60)
APP = "https://app.example"


@pytest.fixture(scope="module")
def jwt_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(
        "streams", auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_leeway=0, cors_origins=APP
    )


async def write(jwt_server: ServerProcess, id: str, data: dict[str, Any]) -> None:
    token = hs_token(sub="writer")
    async with httpx.AsyncClient(
        base_url=jwt_server.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        assert (await http.put(f"/v1/notes/{id}", json=data)).status_code in (200, 201)


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
async def test_a_stream_ends_with_an_error_when_its_token_expires(
    jwt_server: ServerProcess, accept: str
) -> None:
    token = hs_token(scope="watch:notes", ttl=2)
    headers = {"Authorization": f"Bearer {token}", "Accept": accept}
    lines: list[dict] = []
    async with (
        httpx.AsyncClient(base_url=jwt_server.url, timeout=10) as http,
        http.stream("GET", "/v1/notes", params={"watch": "true"}, headers=headers) as response,
    ):
        assert response.status_code == 200
        id = f"before-{uuid.uuid4().hex[:8]}"
        await write(jwt_server, id, {"n": 1})
        async with asyncio.timeout(8):
            async for line in response.aiter_lines():
                line = line.removeprefix("data: ")
                if line.startswith("{"):
                    lines.append(json.loads(line))
    # The stream has ended (the loop finished by itself), after the change and then the ERROR.
    assert lines[0]["type"] == "ADDED" and lines[0]["object"]["id"] == id
    assert lines[-1]["type"] == "ERROR"
    assert lines[-1]["error"]["status"] == 401 and lines[-1]["error"]["reason"] == "TokenExpired"


async def test_a_websocket_watch_ends_when_its_token_expires(jwt_server: ServerProcess) -> None:
    token = hs_token(scope="watch:notes", ttl=2)
    async with connect(ws_url(jwt_server, f"/v1/notes?watch=true&access_token={token}")) as ws:
        event = await recv(ws, 6)
        assert event["type"] == "ERROR" and event["error"]["reason"] == "TokenExpired"
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_bad_token_on_upgrade_is_an_error_and_4401(jwt_server: ServerProcess) -> None:
    async with connect(ws_url(jwt_server, "/v1/notes?watch=true&access_token=nonsense")) as ws:
        event = await recv(ws)
        assert event["type"] == "ERROR" and event["error"]["status"] == 401
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_multiplexed_refresh_keeps_subscriptions_and_rechecks_grants(jwt_server: ServerProcess) -> None:
    short = hs_token(scope="watch:notes watch:other", ttl=2)
    headers = {"Authorization": f"Bearer {short}"}
    async with connect(ws_url(jwt_server, "/v1/_watch"), additional_headers=headers) as ws:
        await send(ws, {"op": "subscribe", "sub": "s1", "collection": "notes"})
        await send(ws, {"op": "subscribe", "sub": "s2", "collection": "other"})
        assert {(await recv(ws))["type"], (await recv(ws))["type"]} == {"SUBSCRIBED"}
        # A bad token is refused and changes nothing.
        await send(ws, {"op": "auth", "token": "not-a-token"})
        refused = await recv(ws)
        assert refused["type"] == "ERROR" and refused["error"]["status"] == 401 and "sub" not in refused
        # A fresh token, before the first one expires, keeps both subscriptions alive past it.
        await send(ws, {"op": "auth", "token": hs_token(scope="watch:notes watch:other", ttl=600)})
        answer = await recv(ws)
        assert answer["type"] == "AUTHENTICATED" and answer["subject"] == "alice"
        await asyncio.sleep(2.5)
        await write(jwt_server, "after-expiry", {"n": 2})
        event = await recv(ws)
        assert event["sub"] == "s1" and event["object"]["id"] == "after-expiry"
        # A refresh that drops a grant ends that subscription, and only that one.
        await send(ws, {"op": "auth", "token": hs_token(scope="watch:notes", ttl=600)})
        messages = [await recv(ws), await recv(ws)]
        ended = next(m for m in messages if m["type"] == "ERROR")
        assert ended["sub"] == "s2" and ended["error"]["status"] == 403
        assert any(m["type"] == "AUTHENTICATED" for m in messages)
        await write(jwt_server, "still", {"n": 3})
        event = await recv(ws)
        assert event["sub"] == "s1" and event["object"]["id"] == "still"


async def test_multiplexed_connection_ends_when_its_token_expires(jwt_server: ServerProcess) -> None:
    token = hs_token(scope="watch:notes", ttl=2)
    async with connect(ws_url(jwt_server, f"/v1/_watch?access_token={token}")) as ws:
        await send(ws, {"op": "subscribe", "sub": "s1", "collection": "notes"})
        assert (await recv(ws))["type"] == "SUBSCRIBED"
        ended = await recv(ws, 6)
        assert ended["type"] == "ERROR" and ended["sub"] == "s1"
        assert ended["error"]["reason"] == "TokenExpired"
        # The connection's credential has expired with it: its own ERROR, and the socket closes.
        last = await recv(ws)
        assert last["type"] == "ERROR" and "sub" not in last and last["error"]["reason"] == "TokenExpired"
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "TokenExpired")


async def test_multiplexed_may_authenticate_by_message(jwt_server: ServerProcess) -> None:
    async with connect(ws_url(jwt_server, "/v1/_watch")) as ws:
        await send(ws, {"op": "subscribe", "sub": "s1", "collection": "notes"})
        refused = await recv(ws)
        assert refused["type"] == "ERROR" and refused["sub"] == "s1" and refused["error"]["status"] == 401
        await send(ws, {"op": "auth", "token": hs_token(scope="watch:notes")})
        assert (await recv(ws))["type"] == "AUTHENTICATED"
        await send(ws, {"op": "subscribe", "sub": "s1", "collection": "notes"})
        assert (await recv(ws))["type"] == "SUBSCRIBED"


async def test_websocket_origin_checks(jwt_server: ServerProcess) -> None:
    token = hs_token(scope="watch:notes")
    cookie = {"Cookie": f"access_token={token}"}
    url = ws_url(jwt_server, "/v1/notes?watch=true")
    # A cookie from a foreign page is ambient authority: refused at the handshake.
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin="https://evil.example", additional_headers=cookie):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    # From an allowed origin, or with a token the page itself holds, it is served.
    async with connect(url, origin=APP, additional_headers=cookie) as ws:  # type: ignore[arg-type]
        await send(ws, {"op": "ping"})
        assert (await recv(ws))["type"] == "PONG"
    async with connect(url + f"&access_token={token}", origin="https://evil.example") as ws:  # type: ignore[arg-type]
        await send(ws, {"op": "ping"})
        assert (await recv(ws))["type"] == "PONG"


def test_cors_and_cookie_writes(jwt_server: ServerProcess) -> None:
    token = hs_token()
    with httpx.Client(base_url=jwt_server.url, timeout=10) as http:
        pre = http.options(
            "/v1/notes/x",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == APP
        evil = http.options(
            "/v1/notes/x", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"}
        )
        assert "access-control-allow-origin" not in evil.headers
        # A refusal still carries CORS headers, so the page can read why.
        r = http.get("/v1/notes", headers={"Origin": APP})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == APP
        cookies = {"Cookie": f"access_token={token}"}
        r = http.put("/v1/notes/c", json={"a": 1}, headers={"Origin": "https://evil.example", **cookies})
        assert r.status_code == 403 and r.json()["reason"] == "ForeignOrigin"
        assert http.put("/v1/notes/c", json={"a": 1}, headers={"Origin": APP, **cookies}).status_code == 201
        # A bearer token is not ambient: a foreign page that holds one may use it.
        r = http.put(
            "/v1/notes/c",
            json={"a": 2},
            headers={"Origin": "https://evil.example", "Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200


async def test_unauthenticated_dev_server_refuses_foreign_websockets(make_server: Any) -> None:
    proc = make_server()  # auth none
    url = ws_url(proc, "/v1/notes?watch=true")
    with pytest.raises(InvalidStatus):
        async with connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    async with connect(url, origin=proc.url) as ws:  # the server's own pages  # type: ignore[arg-type]
        await send(ws, {"op": "ping"})
        assert (await recv(ws))["type"] == "PONG"
