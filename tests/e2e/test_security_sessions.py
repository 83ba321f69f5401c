"""The credential of an open `/v1/_watch` socket keeps being checked: a revoked API key or an
expired token reads nothing more on it (not even with since=0 or initial=true), and the socket
closes with an ERROR and 4401; a socket without a credential has a deadline to send one, and
refused subscribes do not keep an idle socket open."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.security_keys import AUDIENCE, SECRET, hs_token
from tests.support.server import ServerFactory, ServerProcess
from tests.support.ws import recv, send, ws_url
from watchroute.security.apikeys import APIKeyStore
from watchroute.security.identity import UNAUTHENTICATED, Identity
from watchroute.security.policy import Security
from watchroute.security.session import WatchSession
from watchroute.settings import Settings

pytestmark = pytest.mark.timeout(60)
IDLE = 1.5
AUTH_DEADLINE = 1.0


@pytest.fixture(scope="module")
def jwt_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(
        "sessions-jwt",
        auth="jwt",
        jwt_secret=SECRET,
        jwt_audience=AUDIENCE,
        jwt_leeway=0,
        ws_idle_timeout=IDLE,
        ws_auth_timeout=AUTH_DEADLINE,
    )


@pytest.fixture(scope="module")
def key_server(module_servers: ServerFactory) -> ServerProcess:
    # Lookups remembered for 30 s, and open watches' keys checked as seldom: what a subscribe
    # refuses here, it refuses by asking the store itself.
    return module_servers("sessions-key", auth="apikey", apikey_cache_seconds=30)


def create_key(server: ServerProcess, *scopes: str) -> tuple[str, str]:
    # The store the `apikey` commands use, without a process each: (id, key).
    record, key = APIKeyStore(server.database).create(list(scopes))
    return record.id, key


def revoke(server: ServerProcess, id: str) -> None:
    assert APIKeyStore(server.database).revoke(id)


def collection() -> str:
    return "c" + uuid.uuid4().hex[:10]


async def until_closed(ws: ClientConnection, timeout: float = 5.0) -> tuple[list[dict[str, Any]], int, str]:
    """Every message until the server closes the socket, and the close code and reason."""
    messages: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                messages.append(await recv(ws, timeout))
    assert closed.value.rcvd is not None, "the server did not close the socket"
    return messages, closed.value.rcvd.code, closed.value.rcvd.reason


def assert_ended_without_data(messages: list[dict[str, Any]], reason: str) -> None:
    assert not [m for m in messages if "object" in m], messages  # no ADDED/MODIFIED/DELETED at all
    assert messages and all(m["type"] == "ERROR" for m in messages), messages
    assert all(m["error"]["status"] == 401 and m["error"]["reason"] == reason for m in messages)
    assert "sub" not in messages[-1]  # the connection's own ERROR comes last


async def test_a_revoked_key_reads_nothing_more_on_an_open_socket(key_server: ServerProcess) -> None:
    coll = collection()
    id, key = create_key(key_server, f"read:{coll}", f"watch:{coll}")
    _, writer = create_key(key_server, f"write:{coll}")
    with httpx.Client(base_url=key_server.url, headers={"X-API-Key": writer}) as http:
        for n in range(3):
            assert http.put(f"/v1/{coll}/d{n}", json={"n": n}).status_code == 201
    headers = {"X-API-Key": key}
    async with (
        connect(ws_url(key_server, "/v1/_watch"), additional_headers=headers) as from_log,
        connect(ws_url(key_server, "/v1/_watch"), additional_headers=headers) as from_state,
    ):
        for ws in (from_log, from_state):
            await send(ws, {"op": "subscribe", "sub": "live", "collection": coll})
            assert (await recv(ws))["type"] == "SUBSCRIBED"
        revoke(key_server, id)
        await send(from_log, {"op": "subscribe", "sub": "s1", "collection": coll, "since": 0})
        await send(from_state, {"op": "subscribe", "sub": "s2", "collection": coll, "initial": True})
        for ws, sub in ((from_log, "s1"), (from_state, "s2")):
            messages, code, reason = await until_closed(ws)
            assert_ended_without_data(messages, "KeyRevoked")
            assert [m.get("sub") for m in messages] == ["live", sub, None]
            assert (code, reason) == (4401, "KeyRevoked")


async def test_an_expired_token_reads_nothing_more_on_an_open_socket(jwt_server: ServerProcess) -> None:
    coll = collection()
    writer = hs_token(sub="writer", scope=f"write:{coll}")
    with httpx.Client(base_url=jwt_server.url, headers={"Authorization": f"Bearer {writer}"}) as http:
        for n in range(3):
            assert http.put(f"/v1/{coll}/d{n}", json={"n": n}).status_code == 201
    token = hs_token(scope=f"watch:{coll}", ttl=2)
    exp = int(time.time()) + 2  # as hs_token computes it; leeway 0
    url = ws_url(jwt_server, f"/v1/_watch?access_token={token}")
    async with connect(url) as from_log, connect(url) as from_state:
        for ws in (from_log, from_state):
            await send(ws, {"op": "subscribe", "sub": "live", "collection": coll})
            assert (await recv(ws))["type"] == "SUBSCRIBED"
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
        # Past the expiry: the server may already be closing the sockets; whatever it answers,
        # no document may come.
        with contextlib.suppress(ConnectionClosed):
            await send(from_log, {"op": "subscribe", "sub": "s1", "collection": coll, "since": 0})
        with contextlib.suppress(ConnectionClosed):
            await send(from_state, {"op": "subscribe", "sub": "s2", "collection": coll, "initial": True})
        for ws in (from_log, from_state):
            messages, code, reason = await until_closed(ws)
            assert_ended_without_data(messages, "TokenExpired")
            assert messages[0]["sub"] == "live"
            assert (code, reason) == (4401, "TokenExpired")


async def test_a_revoked_key_ends_open_sockets_and_streams(make_server: Any) -> None:
    server = make_server(auth="apikey", apikey_cache_seconds=0.5)
    id, key = create_key(server, "watch:notes")
    headers = {"X-API-Key": key}
    ndjson = {**headers, "Accept": "application/x-ndjson"}
    async with (
        connect(ws_url(server, "/v1/_watch"), additional_headers=headers) as idle,
        connect(ws_url(server, "/v1/notes?watch=true"), additional_headers=headers) as single,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        http.stream("GET", "/v1/notes", params={"watch": "true"}, headers=ndjson) as stream,
    ):
        assert stream.status_code == 200
        await send(idle, {"op": "ping"})
        assert (await recv(idle))["type"] == "PONG"
        revoke(server, id)
        started = time.monotonic()
        # A socket with no subscription at all is closed too: its credential no longer stands.
        messages, code, reason = await until_closed(idle)
        assert_ended_without_data(messages, "KeyRevoked")
        assert (code, reason) == (4401, "KeyRevoked")
        messages, code, _ = await until_closed(single)
        assert [m["error"]["reason"] for m in messages] == ["KeyRevoked"]
        assert code == 4401
        async with asyncio.timeout(5):  # the stream ends by itself, after its ERROR
            lines = [orjson.loads(line) async for line in stream.aiter_lines() if line.strip()]
        assert [(m["type"], m["error"]["reason"]) for m in lines if m["type"] != "BOOKMARK"] == [
            ("ERROR", "KeyRevoked")
        ]
        assert time.monotonic() - started < 3  # within apikey_cache_seconds and a check


async def test_refused_subscribes_do_not_keep_a_socket_open(jwt_server: ServerProcess) -> None:
    token = hs_token(scope="watch:notes", ttl=600)
    async with connect(ws_url(jwt_server, f"/v1/_watch?access_token={token}")) as ws:
        started = time.monotonic()
        refused: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() - started < IDLE * 4:
                await send(ws, {"op": "subscribe", "sub": "s", "collection": "secret"})  # no grant
                refused.append(await recv(ws))
                await asyncio.sleep(0.3)
        assert refused and all(m["type"] == "ERROR" and m["error"]["status"] == 403 for m in refused)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
        assert time.monotonic() - started < IDLE + 1.0


async def test_an_unauthenticated_socket_has_a_deadline_to_authenticate(jwt_server: ServerProcess) -> None:
    async with connect(ws_url(jwt_server, "/v1/_watch")) as ws:
        started = time.monotonic()
        await send(ws, {"op": "subscribe", "sub": "s", "collection": "notes"})
        assert (await recv(ws))["error"]["status"] == 401  # refused; the socket may still authenticate
        messages, code, reason = await until_closed(ws)
        assert [(m["type"], m["error"]["reason"]) for m in messages] == [("ERROR", "AuthTimeout")]
        assert (code, reason) == (4401, "AuthTimeout")
        assert AUTH_DEADLINE - 0.1 < time.monotonic() - started < AUTH_DEADLINE + 1.0
    # Authenticated in time, the socket stays past the deadline.
    async with connect(ws_url(jwt_server, "/v1/_watch")) as ws:
        await send(ws, {"op": "auth", "token": hs_token(scope="watch:notes", ttl=600)})
        assert (await recv(ws))["type"] == "AUTHENTICATED"
        await send(ws, {"op": "subscribe", "sub": "s", "collection": "notes"})
        assert (await recv(ws))["type"] == "SUBSCRIBED"
        await asyncio.sleep(AUTH_DEADLINE + 0.5)
        await send(ws, {"op": "ping"})
        assert (await recv(ws))["type"] == "PONG"


async def test_a_subscribe_checks_the_credential_itself() -> None:
    # The check that runs before anything is read for a subscribe, apart from the timers.
    security = Security(Settings(auth="jwt", jwt_secret=SECRET))
    now = time.time()
    expired = Identity("alice", frozenset({"watch:*"}), {}, now - 1, "jwt")
    valid = Identity("alice", frozenset({"watch:*"}), {}, now + 600, "jwt")
    problem = await WatchSession(security, expired, None).lapsed()
    assert problem is not None and (problem.status, problem.reason) == (401, "TokenExpired")
    assert await WatchSession(security, valid, None).lapsed() is None
    # Without a credential there is nothing to lapse: the subscribe is refused, the socket stays.
    assert await WatchSession(security, UNAUTHENTICATED, None).lapsed() is None
