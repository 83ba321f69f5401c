"""The Python client against real server processes: the REST calls, and watches that survive
restarts (SIGTERM and SIGKILL), dead connections and an expired history, over each transport."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import REPO
from tests.support.security_keys import create_apikey, throwaway_certificate
from tests.support.server import ServerProcess
from tests.support.watching import compacted_past
from watchroute.client import (
    BOOKMARK,
    RESYNC,
    APIError,
    AsyncClient,
    AsyncWatch,
    Backoff,
    BadRequest,
    Client,
    ConnectionFailed,
    Expired,
    LiveCollection,
    NotFound,
    PreconditionFailed,
    ProtocolError,
    Resource,
    WatchEvent,
)
from watchroute.client._transports import Transport, retry_after

pytestmark = pytest.mark.timeout(60)


def object_of(event: WatchEvent) -> Resource:
    """The resource an ADDED, MODIFIED or DELETED event carries."""
    assert event.object is not None, event
    return event.object


TRANSPORTS: list[Transport] = ["sse", "ws", "ndjson", "longpoll"]
QUICK = {"sse_retry_ms": 100, "shutdown_grace": 0.5}


def quick_backoff() -> Backoff:
    return Backoff(initial=0.05, maximum=0.3)


class Collector:
    """Consumes a watch in a task, keeping every event it hands out."""

    def __init__(self, watch: AsyncWatch) -> None:
        self.watch = watch
        self.events: list[WatchEvent] = []
        self._seen = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.watch:
            self.events.append(event)
            self._seen.set()

    @property
    def changes(self) -> list[WatchEvent]:
        return [e for e in self.events if e.object is not None and not e.initial]

    async def until(self, condition: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                if self.task.done():
                    self.task.result()  # raises what ended it
                    raise AssertionError("the watch ended")
                self._seen.clear()
                await self._seen.wait()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.watch.aclose()


# -- reads and writes --------------------------------------------------------------------------


def test_reads_writes_and_preconditions(server):
    with Client(server.url) as client:
        created = client.put("stocks", "AAPL", {"price": 1, "tags": ["a"]})
        assert (created.id, created.data) == ("AAPL", {"price": 1, "tags": ["a"]})
        assert client.get("stocks", "AAPL") == created
        with pytest.raises(PreconditionFailed):
            client.put("stocks", "AAPL", {"price": 2}, create_only=True)
        with pytest.raises(PreconditionFailed):
            client.put("stocks", "AAPL", {"price": 2}, if_match=created.revision + 5)
        replaced = client.put("stocks", "AAPL", {"price": 2}, if_match=created.revision)
        merged = client.patch("stocks", "AAPL", {"volume": 10})
        assert merged.data == {"price": 2, "volume": 10}
        patched = client.patch("stocks", "AAPL", [{"op": "replace", "path": "/price", "value": 3}])
        assert patched.data is not None
        assert patched.data["price"] == 3 and patched.revision > merged.revision > replaced.revision
        assigned = client.create("stocks", {"price": 9})
        assert assigned.id and client.get("stocks", assigned.id).data == {"price": 9}

        page = client.list("stocks", limit=1)
        assert len(page.items) == 1 and page.continue_
        everything = client.list("stocks")
        assert {r.id for r in everything.items} == {"AAPL", assigned.id}
        assert everything.revision == patched.revision + 1
        assert [r.id for r in client.list("stocks", filter="price>5").items] == [assigned.id]
        with pytest.raises(BadRequest) as bad:
            client.list("stocks", filter="price>")
        assert bad.value.reason == "BadFilter"

        # A batch is all or nothing: a failing if_match leaves everything as it was.
        with pytest.raises(PreconditionFailed):
            client.batch(
                [
                    {"op": "put", "collection": "stocks", "id": "MSFT", "data": {"price": 5}},
                    {"op": "delete", "collection": "stocks", "id": "AAPL", "if_match": created.revision},
                ]
            )
        with pytest.raises(NotFound):
            client.get("stocks", "MSFT")
        result = client.batch(
            [
                {"op": "put", "collection": "stocks", "id": "MSFT", "data": {"price": 5}},
                {"op": "delete", "collection": "stocks", "id": "AAPL", "if_match": patched.revision},
            ]
        )
        assert [r.revision for r in result.results] == [result.revision - 1, result.revision]
        deleted = client.delete("stocks", "MSFT")
        assert deleted.revision == result.revision + 1 and deleted.data == {"price": 5}
        with pytest.raises(NotFound):
            client.delete("stocks", "MSFT")


async def test_async_client_has_the_same_api(server):
    async with AsyncClient(server.url) as client:
        put = await client.put("stocks", "AAPL", {"price": 1})
        assert (await client.get("stocks", "AAPL")) == put
        assert (await client.list("stocks")).items == [put]
        with pytest.raises(NotFound):
            await client.patch("stocks", "NOPE", {"price": 1})


# -- watching ----------------------------------------------------------------------------------


async def test_watch_resumes_across_sigterm_and_sigkill_without_loss_or_repeat(make_server):
    """One watch per transport, all through the same restarts."""
    server: ServerProcess = make_server(**QUICK)
    async with AsyncClient(server.url) as client:
        collectors = {
            t: Collector(client.watch("stocks", transport=t, heartbeat=1, backoff=quick_backoff()))
            for t in TRANSPORTS
        }
        written: list[int] = []

        async def write(n: int) -> None:
            for _ in range(n):
                id = f"s{random.randrange(5)}"
                written.append((await client.put("stocks", id, {"n": len(written)})).revision)
                await client.put("other", id, {})  # not for these watches: skipped, never a gap

        async def all_have(n: int) -> None:
            for c in collectors.values():
                await c.until(lambda c=c: len(c.changes) >= n)

        try:
            for c in collectors.values():
                await c.until(lambda c=c: c.watch.revision is not None)
            await write(10)
            await all_have(10)
            await asyncio.to_thread(server.stop)  # SIGTERM: streams end cleanly
            await asyncio.to_thread(server.start)
            await write(10)  # most likely before the clients are back: they must catch up
            await all_have(15)
            await asyncio.to_thread(server.kill)  # SIGKILL: connections just break
            await asyncio.to_thread(server.start)
            await write(10)
            await all_have(30)
            for transport, c in collectors.items():
                assert [e.revision for e in c.changes] == written, transport
                assert c.watch.reconnects >= 2, transport
            assert collectors["sse"].watch.server_retry == 0.1  # the server's `retry:` is honoured
        finally:
            for c in collectors.values():
                await c.close()


async def test_expired_history_raises_or_relists(make_server):
    server = make_server(history_events=5, compaction_interval=0.2)
    async with AsyncClient(server.url) as client:
        for i in range(20):
            await client.put("stocks", f"s{i % 4}", {"i": i})
        gone = await client.put("stocks", "gone", {})
        await client.delete("stocks", "gone")
        await compacted_past(server.url, 1)

        for transport in TRANSPORTS:
            with pytest.raises(Expired) as info:
                async for _ in client.watch("stocks", since=1, transport=transport):
                    pass
            assert info.value.status == 410 and "list again" in info.value.detail, transport

        since = gone.revision - 20
        collectors = {
            t: Collector(client.watch("stocks", since=since, transport=t, on_expired="relist"))
            for t in TRANSPORTS
        }
        try:
            now = (await client.list("stocks")).revision
            for transport, c in collectors.items():
                await c.until(lambda c=c: any(e.initial_events_end for e in c.events))
                listing = c.events
                assert listing[0].type == RESYNC, transport
                assert sorted(object_of(e).id for e in listing[1:-1]) == ["s0", "s1", "s2", "s3"], transport
                assert all(e.initial for e in listing[1:-1]), transport
                assert listing[-1].revision == now, transport
            rev = (await client.put("stocks", "s9", {})).revision
            for transport, c in collectors.items():
                await c.until(lambda c=c: any(e.revision == rev for e in c.changes))
                assert [e.revision for e in c.changes] == [rev], transport
        finally:
            for c in collectors.values():
                await c.close()


async def test_bookmarks_move_a_filtered_watch_resume_point(server):
    async with AsyncClient(server.url) as client:
        watch = client.watch("stocks", filter="price>100", transport="ws", heartbeat=1)
        collector = Collector(watch)
        try:
            await collector.until(lambda: watch.revision is not None)
            dear = await client.put("stocks", "A", {"price": 150})
            for i in range(5):
                cheap = await client.put("stocks", f"c{i}", {"price": 1})
            await collector.until(lambda: watch.revision == cheap.revision, timeout=5)
            assert [e.revision for e in collector.changes] == [dear.revision]
            assert collector.events[-1].type == "BOOKMARK"
        finally:
            await collector.close()


async def test_dead_connection_is_noticed_by_missed_heartbeats(server):
    """A frozen server (SIGSTOP) keeps its sockets open but says nothing: the client must give
    the connection up after two missed heartbeats, not wait on it for ever."""
    transports: list[Transport] = ["sse", "ws"]  # an HTTP read timeout, and a WebSocket receive timeout
    async with AsyncClient(server.url) as client:
        collectors = [
            Collector(client.watch("stocks", transport=t, heartbeat=1, backoff=quick_backoff()))
            for t in transports
        ]
        try:
            for c in collectors:
                await c.until(lambda c=c: c.watch.revision is not None)
            first = await client.put("stocks", "A", {})
            for c in collectors:
                await c.until(lambda c=c: len(c.changes) == 1)
            os.kill(server.pid, signal.SIGSTOP)
            try:
                frozen = time.monotonic()
                async with asyncio.timeout(8):
                    while any(c.watch.reconnects == 0 for c in collectors):
                        await asyncio.sleep(0.1)
                assert 2 <= time.monotonic() - frozen < 8
            finally:
                os.kill(server.pid, signal.SIGCONT)
            second = await client.put("stocks", "A", {"n": 2})
            for transport, c in zip(transports, collectors, strict=True):
                await c.until(lambda c=c: len(c.changes) == 2)
                assert [e.revision for e in c.changes] == [first.revision, second.revision], transport
        finally:
            for c in collectors:
                await c.close()


def test_blocking_watch_and_live_collection(server):
    with Client(server.url) as client:
        client.put("stocks", "A", {"price": 1})
        with client.watch("stocks", initial=True, transport="ws") as events:
            first = next(events)
            assert (first.type, first.initial, object_of(first).id) == ("ADDED", True, "A")
            assert next(events).initial_events_end
            rev = client.put("stocks", "B", {"price": 2}).revision
            assert next(events).revision == rev
        with client.live("stocks", transport="longpoll", heartbeat=1) as live:
            assert live.wait_synced(5)
            rev = client.delete("stocks", "A").revision
            assert live.wait_for_revision(rev, 5)
            assert live.snapshot() == {r.id: r for r in client.list("stocks").items}


def test_backoff_is_full_jitter_capped_and_under_server_hints():
    backoff = Backoff(initial=0.1, maximum=1.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert max(delays[:1]) <= 0.1 and max(delays[10:]) > 0.5  # grows, up to the cap
    assert len(set(delays)) == len(delays)  # jittered, not in lock-step
    assert backoff.next_delay(floor=3.0) == 3.0  # a server hint is a floor
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    assert retry_after("7") == 7.0
    assert 55 < retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) <= 60
    assert retry_after("soon") == 0.0


def test_watch_arguments_are_checked_before_connecting():
    client = AsyncClient("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        client.watch("stocks", transport="pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.watch("stocks", since=3, initial=True)


async def test_ws_watch_sends_the_clients_headers(make_server):
    """An API key given as a header opens WebSocket watches too, not only HTTP ones."""
    server = make_server(auth="apikey")
    _, key = create_apikey(server.database, "read:*", "write:*", "watch:*")
    async with AsyncClient(server.url, headers={"X-API-Key": key}) as client:
        put = await client.put("stocks", "A", {})
        async with asyncio.timeout(5), client.watch("stocks", initial=True, transport="ws") as watch:
            first = await anext(watch)
        assert (object_of(first).id, object_of(first).revision) == ("A", put.revision)


async def test_wss_watch_honours_the_clients_tls_settings(make_server, tmp_path):
    cert, key = throwaway_certificate(tmp_path)
    server = make_server(tls_cert=cert, tls_key=key)
    trust = ssl.create_default_context(cafile=str(cert))  # trusts this certificate only
    async with (
        httpx.AsyncClient(base_url=server.url, verify=trust) as http,
        AsyncClient(server.url, http=http, verify=trust) as client,
    ):
        await client.put("stocks", "A", {})
        async with asyncio.timeout(5), client.watch("stocks", initial=True, transport="ws") as watch:
            first = await anext(watch)
            assert (first.type, watch.reconnects) == ("ADDED", 0) and object_of(first).id == "A"
    with (
        Client(server.url, verify=trust) as blocking,
        blocking.watch("stocks", initial=True, transport="ws") as w,
    ):
        assert object_of(next(w)).id == "A"


async def test_a_rate_limited_listing_is_retried_after_retry_after(make_server):
    """429 from the listing a watch starts with, or a LiveCollection's, means "later"."""
    server = make_server(rate_limit_ip="10/2s")  # Retry-After: 1 once the 10 tokens are spent

    async def exhaust(client: AsyncClient) -> None:
        with pytest.raises(APIError) as limited:
            for _ in range(50):
                await client.list("stocks", limit=1)
        assert limited.value.status == 429

    async with AsyncClient(server.url) as client:
        await exhaust(client)
        started = time.monotonic()
        async with asyncio.timeout(8), client.watch("stocks", heartbeat=1, backoff=quick_backoff()) as watch:
            assert (await anext(watch)).type == BOOKMARK
        assert time.monotonic() - started >= 1  # not before the Retry-After
        await exhaust(client)
        async with LiveCollection(client, "stocks", backoff=quick_backoff()) as live:
            assert await live.wait_synced(8)


def test_a_malformed_event_is_a_protocol_error():
    watch = AsyncClient("http://127.0.0.1:1").watch("stocks", since=5)
    resource = {"id": "A", "revision": 6, "created_revision": 6, "data": {}}
    accepted = watch._accept({"type": "MODIFIED", "revision": 6, "object": resource})
    assert accepted is not None and accepted.revision == 6
    for raw in (
        {"type": "MODIFIED", "object": resource},
        {"type": "ADDED", "revision": "7", "object": resource},
        {"type": "BOOKMARK"},
        {"type": "DELETED", "revision": 8},
        {"type": "DELETED", "revision": 8, "object": {"id": "A"}},
        ["not", "an", "object"],
    ):
        with pytest.raises(ProtocolError):
            watch._accept(raw)  # type: ignore[arg-type]
    assert watch.revision == 6


async def test_a_request_that_times_out_names_the_timeout():
    # A server that takes the connection and never answers: httpx's ReadTimeout has no text of
    # its own, and the error must still say what went wrong.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with AsyncClient(url, timeout=0.3) as client:
            with pytest.raises(ConnectionFailed) as failed:
                await client.get("stocks", "A")
    assert str(failed.value) == f"GET {url}/v1/stocks/A: ReadTimeout"


async def test_aclose_closes_only_its_own_http_client_and_limit_0_is_sent(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        async with AsyncClient(server.url, http=http) as client:
            await client.put("stocks", "A", {})
            with pytest.raises(BadRequest):
                await client.list("stocks", limit=0)  # sent as it is; the server refuses it
        assert not http.is_closed
        assert (await http.get("/v1/stocks/A")).status_code == 200
    owned = AsyncClient(server.url)
    await owned.aclose()
    assert owned.http.is_closed


@pytest.mark.slow
def test_docs_examples_run(server):
    """Every python and sh block of docs/client.md and of the README's client section, in
    order, against one server."""
    root = REPO
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Python client and CLI") :]
    section = section[: section.index("\n## ", 1)]
    doc = section + (root / "docs" / "client.md").read_text()
    blocks = re.findall(r"^```(python|sh)\n(.*?)^```", doc, re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 8
    env = dict(os.environ, WATCHROUTE_URL=server.url)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Consecutive blocks of one language run in one process (each python block in a namespace
    # of its own, as a script), in the page's order.
    for language, group in itertools.groupby(blocks, key=lambda block: block[0]):
        codes = [code for _, code in group]
        if language == "python":
            command = [sys.executable, "-c", DOCS_RUNNER, orjson.dumps(codes).decode()]
        else:
            command = ["bash", "-e", "-c", "\n".join(codes)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{codes}\n{done.stdout}\n{done.stderr}"


DOCS_RUNNER = """
import json, sys
for code in json.loads(sys.argv[1]):
    exec(compile(code, "<docs>", "exec"), {"__name__": "__main__"})
"""


def test_a_patch_watch_fills_its_states_silently_then_follows():
    """`format="patch"` without `since` lists first only to hold the states its patches apply
    to: the caller hears nothing of that listing, then every change after it."""
    from watchroute.client._watch import AsyncWatch, Phase

    watch = AsyncWatch(None, "c", format="patch")  # type: ignore[arg-type]

    def phase() -> Phase:  # read afresh: mypy would keep `watch.phase` narrowed by an assert
        return watch.phase

    assert phase() is Phase.FILLING and watch._params()["initial"] == "true"
    resource = {"id": "a", "revision": 3, "created_revision": 3, "data": {"n": 1}}
    assert watch._accept({"type": "ADDED", "revision": 3, "object": resource}) is None
    end = {"type": "BOOKMARK", "revision": 4, "initial_events_end": True}
    assert watch._accept(end) is None and phase() is Phase.FOLLOWING
    event = watch._accept({"type": "MODIFIED", "revision": 5, "id": "a", "patch": {"n": 2}})
    assert event is not None and event.object is not None and event.object.data == {"n": 2}
    assert "initial" not in watch._params() and watch._params()["since"] == 5
