"""Caps on concurrent watches shared through Redis: instances enforce one cap together, a watch
that ends frees its place at once, a vanished instance's watches stop counting after the lease
time, and an instance that cannot reach Redis counts its own watches."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support.redis import REDIS_URL, redis_or_skip
from tests.support.security_keys import AUDIENCE, SECRET, hs_token
from tests.support.server import ServerProcess, free_port
from watchroute.security.leases import CapReached, WatchLeases
from watchroute.security.limits import WatchCounts, redis_client

pytestmark = pytest.mark.timeout(90)
JWT = {"auth": "jwt", "jwt_secret": SECRET, "jwt_audience": AUDIENCE}
# How long a closed stream may take to reach the server and give its place back: far below the
# lease time (10 s), so a place that comes back within it was freed, not left to lapse.
FREED_WITHIN = 3.0


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of the test's own, and its keys deleted after it."""
    redis_or_skip()
    import redis

    prefix = f"watchroute-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


class Watches:
    """SSE watches opened by the test and held open until it ends (or it closes one)."""

    def __init__(self, http: httpx.AsyncClient, stack: contextlib.AsyncExitStack) -> None:
        self.http = http
        self.stack = stack

    async def open(self, server: ServerProcess, sub: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {hs_token(sub=sub, scope='watch:*')}"}
        request = self.http.build_request(
            "GET", server.url + "/v1/caps", params={"watch": "true"}, headers=headers
        )
        response = await self.http.send(request, stream=True)
        self.stack.push_async_callback(response.aclose)
        return response

    async def refusal(self, server: ServerProcess, sub: str) -> dict[str, Any]:
        """The problem a refused watch answers with; fails if the watch is admitted."""
        response = await self.open(server, sub)
        assert response.status_code == 429, response.status_code
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"] == "5"
        return orjson.loads(await response.aread())

    async def admitted_within(self, server: ServerProcess, sub: str, seconds: float) -> float:
        """Open a watch, retrying while refused; how long until one was admitted."""
        started = time.monotonic()
        while True:
            response = await self.open(server, sub)
            if response.status_code == 200:
                return time.monotonic() - started
            assert response.status_code == 429
            await response.aclose()
            assert time.monotonic() - started < seconds, f"still refused after {seconds} s"
            await asyncio.sleep(0.1)


@pytest.fixture
async def watches() -> AsyncIterator[Watches]:
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
        yield Watches(http, stack)


async def test_two_instances_hold_one_cap_together(make_server: Any, prefix: str, watches: Watches) -> None:
    shared = {**JWT, "redis_url": REDIS_URL, "redis_prefix": prefix}
    one = make_server(**shared, max_watches_per_identity=2, max_watches=3)
    two = make_server(**shared, max_watches_per_identity=2, max_watches=3)
    alice, bob, carol = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("alice", "bob", "carol"))

    first = [await watches.open(one, alice) for _ in range(2)]
    assert [r.status_code for r in first] == [200, 200]
    # Alone, the second instance would admit two more of alice's; together they hold two.
    refused = await watches.refusal(two, alice)
    assert refused["reason"] == "TooManyWatches" and "at most 2" in refused["detail"]
    assert (await watches.open(two, bob)).status_code == 200
    # Three watches are open across the two instances: the total cap holds for a newcomer.
    full = await watches.refusal(two, carol)
    assert full["reason"] == "TooManyWatches" and "most concurrent watches (3)" in full["detail"]
    assert (await watches.refusal(one, carol))["reason"] == "TooManyWatches"

    # A watch that ends gives its place back at once, to every instance.
    await first[0].aclose()
    assert await watches.admitted_within(two, alice, FREED_WITHIN) < FREED_WITHIN
    assert (await watches.refusal(one, alice))["reason"] == "TooManyWatches"


async def test_a_watch_refused_after_the_door_keeps_no_place(
    make_server: Any, prefix: str, watches: Watches
) -> None:
    server = make_server(**JWT, redis_url=REDIS_URL, redis_prefix=prefix, max_watches_per_identity=1)
    sub = f"ivy-{uuid.uuid4().hex[:6]}"
    headers = {"Authorization": f"Bearer {hs_token(sub=sub, scope='watch:*')}"}
    # Admitted under the cap, then refused for its cursor: the place it took is given back.
    for _ in range(3):
        r = await watches.http.get(
            server.url + "/v1/caps", params={"watch": "true", "since": 10**9}, headers=headers
        )
        assert r.status_code == 400 and r.json()["reason"] == "FutureRevision"
    assert (await watches.open(server, sub)).status_code == 200
    assert (await watches.refusal(server, sub))["reason"] == "TooManyWatches"


async def test_a_place_given_back_is_free_to_the_next_watch_at_once(prefix: str) -> None:
    # A client that closes its only watch and opens another on the same instance is admitted,
    # however soon: the new lease is not taken in Redis before the old one has left it.
    client = redis_client(REDIS_URL)
    leases = WatchLeases(client, prefix, WatchCounts(0, 1))
    leases.start()
    try:
        for _ in range(20):
            lease = await leases.take("jwt:ivy")
            lease.release()
        held = await leases.take("jwt:ivy")
        with pytest.raises(CapReached):
            await leases.take("jwt:ivy")
        del held
    finally:
        await leases.close()
        await client.aclose()


async def test_a_vanished_instance_stops_counting_after_its_lease(
    make_server: Any, prefix: str, watches: Watches
) -> None:
    server = make_server(**JWT, redis_url=REDIS_URL, redis_prefix=prefix, max_watches_per_identity=2)
    sub = f"dave-{uuid.uuid4().hex[:6]}"
    # Another instance takes both of dave's places with a one-second lease, then is gone: it
    # never renews them and never gives them back.
    client = redis_client(REDIS_URL)
    try:
        vanished = WatchLeases(client, prefix, WatchCounts(0, 2), lease_seconds=1.0)
        taken = time.monotonic()
        held = [await vanished.take(f"jwt:{sub}") for _ in range(2)]
        with pytest.raises(CapReached):
            await vanished.take(f"jwt:{sub}")
        assert (await watches.refusal(server, sub))["reason"] == "TooManyWatches"
        await watches.admitted_within(server, sub, 5.0)
        # Admitted once the leases lapsed, long before the server's own lease time (10 s).
        assert 0.95 <= time.monotonic() - taken < 5.0
        assert (await watches.open(server, sub)).status_code == 200  # both places are free
        assert (await watches.refusal(server, sub))["reason"] == "TooManyWatches"
        del held
    finally:
        await client.aclose()


async def test_without_redis_an_instance_counts_its_own_watches(make_server: Any, watches: Watches) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    server = make_server(**JWT, redis_url=nothing_there, max_watches_per_identity=2)
    erin, frank = f"erin-{uuid.uuid4().hex[:6]}", f"frank-{uuid.uuid4().hex[:6]}"
    first = [await watches.open(server, erin) for _ in range(2)]
    assert [r.status_code for r in first] == [200, 200]  # nobody is refused for Redis's absence
    assert (await watches.refusal(server, erin))["reason"] == "TooManyWatches"
    assert (await watches.open(server, frank)).status_code == 200
    await first[0].aclose()
    await watches.admitted_within(server, erin, FREED_WITHIN)
    assert server.log().count("watch caps: Redis does not answer") == 1  # logged once


class OwnRedis:
    """A Redis of the test's own, which it may stop and start again (empty) on the same port."""

    def __init__(self, binary: str, workdir: Any) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                assert time.monotonic() < deadline, "the test's own Redis did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Any) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: no Redis of the test's own to stop")
    own = OwnRedis(binary, tmp_path)
    own.start()
    try:
        yield own
    finally:
        own.kill()


async def test_when_redis_stops_answering_an_instance_counts_alone(
    make_server: Any, own_redis: OwnRedis, watches: Watches
) -> None:
    shared = {**JWT, "redis_url": own_redis.url, "max_watches_per_identity": 2}
    server = make_server(**shared)
    gina, hal = f"gina-{uuid.uuid4().hex[:6]}", f"hal-{uuid.uuid4().hex[:6]}"
    first = [await watches.open(server, gina) for _ in range(2)]
    assert [r.status_code for r in first] == [200, 200]
    own_redis.kill()
    # The watches it already holds still count on this instance; others are still served.
    assert (await watches.refusal(server, gina))["reason"] == "TooManyWatches"
    assert (await watches.open(server, hal)).status_code == 200
    await first[0].aclose()
    await watches.admitted_within(server, gina, FREED_WITHIN)
    assert server.log().count("watch caps: Redis does not answer") == 1

    # Redis comes back empty: the next renewal (every third of the 10 s lease) puts this
    # instance's open watches back, so another instance counts them again.
    own_redis.start()
    other = make_server(**shared)
    deadline = time.monotonic() + 8
    while (response := await watches.open(other, gina)).status_code == 200:
        await response.aclose()
        assert time.monotonic() < deadline, "the open watches were not counted again"
        await asyncio.sleep(0.2)
    assert orjson.loads(await response.aread())["reason"] == "TooManyWatches"
    assert "watch caps: Redis answers again" in server.log()
