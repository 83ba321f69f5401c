"""LiveCollection against real server processes: after a storm of concurrent writes, restarts and
an expired history, its copy equals the server's list, and its callbacks told the truth."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from tests.support.server import ServerProcess
from watchroute.client import (
    AsyncClient,
    Backoff,
    BadRequest,
    Client,
    ConnectionFailed,
    Expired,
    LiveCollection,
    NotFound,
    Resource,
    ServerError,
)

pytestmark = pytest.mark.timeout(60)

TRANSPORTS = ["sse", "ws", "ndjson", "longpoll"]


class Mirror:
    """A dict kept only from a LiveCollection's callbacks (async and plain mixed). A callback
    that does not fit what it was told before is noted in `wrong` (a LiveCollection swallows
    callback exceptions, so asserting inside one would prove nothing)."""

    def __init__(self) -> None:
        self.items: dict[str, Resource] = {}
        self.calls: list[tuple[str, str]] = []
        self.wrong: list[str] = []

    async def added(self, r: Resource) -> None:
        await asyncio.sleep(0)
        if r.id in self.items:
            self.wrong.append(f"added again: {r.id}")
        self.items[r.id] = r
        self.calls.append(("added", r.id))

    def modified(self, old: Resource, new: Resource) -> None:
        if self.items.get(old.id) != old or new.revision <= old.revision:
            self.wrong.append(f"modified from a state it was not in: {old} -> {new}")
        self.items[new.id] = new
        self.calls.append(("modified", new.id))

    def deleted(self, r: Resource) -> None:
        if self.items.pop(r.id, None) is None:
            self.wrong.append(f"deleted what it did not have: {r.id}")
        self.calls.append(("deleted", r.id))

    def live(self, client: AsyncClient, **options: Any) -> LiveCollection:
        return LiveCollection(
            client,
            "stocks",
            on_added=self.added,
            on_modified=self.modified,
            on_deleted=self.deleted,
            backoff=Backoff(initial=0.05, maximum=0.3),
            heartbeat=1,
            **options,
        )


async def server_state(client: AsyncClient, filter: str | None = None) -> tuple[int, dict[str, Resource]]:
    page = await client.list("stocks", filter=filter)
    return page.revision, {r.id: r for r in page.items}


async def storm(client: AsyncClient, writers: int, ops: int, seed: int) -> None:
    """Concurrent creates, replaces, patches, deletes and batches on a small set of ids. A write
    that meets a restarting server is retried or dropped; the end state is read back anyway."""

    async def writer(rng: random.Random) -> None:
        for _ in range(ops):
            id = f"s{rng.randrange(30)}"
            n = rng.randrange(100)
            try:
                match rng.randrange(5):
                    case 0 | 1:
                        await client.put("stocks", id, {"n": n})
                    case 2:
                        await client.patch("stocks", id, {"n": n, "patched": True})
                    case 3:
                        await client.delete("stocks", id)
                    case _:
                        await client.batch(
                            [
                                {"op": "put", "collection": "stocks", "id": id, "data": {"n": n}},
                                {"op": "create", "collection": "stocks", "data": {"n": n}},
                            ]
                        )
            except NotFound:
                pass
            except (ConnectionFailed, ServerError):
                await asyncio.sleep(0.05)

    await asyncio.gather(*(writer(random.Random(seed * 100 + i)) for i in range(writers)))


@pytest.mark.slow
async def test_copy_equals_the_server_after_a_storm_and_restarts(make_server):
    server: ServerProcess = make_server(sse_retry_ms=100, shutdown_grace=0.5)
    async with AsyncClient(server.url) as client:
        for i in range(20):
            await client.put("stocks", f"s{i}", {"n": i})
        mirrors = {t: Mirror() for t in TRANSPORTS}
        lives = {t: mirrors[t].live(client, transport=t) for t in TRANSPORTS}
        filtered_mirror = Mirror()
        filtered = filtered_mirror.live(client, transport="ws", filter="n>=50")
        for live in [*lives.values(), filtered]:
            live.start()
        try:
            for live in [*lives.values(), filtered]:
                assert await live.wait_synced(10)
            await storm(client, writers=8, ops=30, seed=1)
            await asyncio.gather(storm(client, writers=4, ops=30, seed=2), asyncio.to_thread(server.restart))
            await asyncio.gather(storm(client, writers=4, ops=30, seed=3), asyncio.to_thread(server.kill))
            await asyncio.to_thread(server.start)
            await storm(client, writers=8, ops=20, seed=4)

            revision, expected = await server_state(client)
            _, expected_filtered = await server_state(client, "n>=50")
            assert len(expected) > 20 and 0 < len(expected_filtered) < len(expected)
            for transport, live in lives.items():
                assert await live.wait_for_revision(revision, 10), transport
                assert dict(live) == expected, transport
                assert mirrors[transport].items == expected, transport
                assert mirrors[transport].wrong == [], transport
            assert await filtered.wait_for_revision(revision, 10)
            assert dict(filtered) == expected_filtered
            assert filtered_mirror.items == expected_filtered
            assert filtered_mirror.wrong == []
        finally:
            for live in [*lives.values(), filtered]:
                await live.stop()


async def test_expired_history_relists_and_reports_only_the_differences(make_server):
    settings: dict[str, Any] = {"history_events": 5, "compaction_interval": 0.2, "shutdown_grace": 0.5}
    server: ServerProcess = make_server(**settings)
    async with AsyncClient(server.url) as client:
        for id in ["keep", "change", "remove"]:
            await client.put("stocks", id, {"v": 1})
        mirror = Mirror()
        live = mirror.live(client, transport="sse")
        async with live:
            assert await live.wait_synced(10)
            assert sorted(mirror.calls) == [("added", "change"), ("added", "keep"), ("added", "remove")]
            mirror.calls.clear()
            seen = live.revision

            # While the collection cannot reach its server, another instance on the same database
            # writes more than the history keeps, and compacts it.
            await asyncio.to_thread(server.stop)
            other = ServerProcess(server.workdir, **settings).start()
            try:
                async with AsyncClient(other.url) as writer:
                    for i in range(10):
                        await writer.put("stocks", "change", {"v": 2 + i})
                    await writer.delete("stocks", "remove")
                    await writer.put("stocks", "new", {"v": 1})
                    await writer.put("stocks", "brief", {"v": 1})
                    await writer.delete("stocks", "brief")
                    async with asyncio.timeout(10):
                        while True:
                            try:
                                async for _ in writer.watch("stocks", since=seen, transport="longpoll"):
                                    break
                            except Expired:
                                break
                            await asyncio.sleep(0.1)
            finally:
                other.stop()
            await asyncio.to_thread(server.start)

            revision, expected = await server_state(client)
            assert await live.wait_for_revision(revision, 10)
            assert live.relists == 1
            assert dict(live) == expected == mirror.items
            # The true differences, once each: nothing for "keep", nothing for "brief".
            assert sorted(mirror.calls) == [("added", "new"), ("deleted", "remove"), ("modified", "change")]
            assert mirror.wrong == []


async def test_a_refused_watch_stops_the_collection_with_its_error(server):
    async with AsyncClient(server.url) as client:
        live = LiveCollection(client, "stocks", filter="n>")
        live.start()
        try:
            with pytest.raises(BadRequest) as info:
                await live.wait_synced(5)
            assert info.value.reason == "BadFilter"
        finally:
            await live.stop()


async def test_live_collection_is_a_read_only_mapping(server):
    async with AsyncClient(server.url) as client:
        a = await client.put("stocks", "A", {"n": 1})
        b = await client.put("stocks", "B", {"n": 2})
        async with LiveCollection(client, "stocks", heartbeat=1) as live:
            assert await live.wait_synced(5)
            assert dict(live.items()) == {"A": a, "B": b}
            assert sorted(live.keys()) == ["A", "B"] and sorted(r.id for r in live.values()) == ["A", "B"]
            assert live.get("A") == a and live.get("Z") is None and "B" in live and "Z" not in live
            assert len(live) == 2 and sorted(live) == ["A", "B"]
            with pytest.raises(TypeError):
                live["C"] = a  # type: ignore[index]


def test_blocking_views_are_snapshots_of_one_revision(server):
    """ids and entries read together: an entry deleted while a view is iterated is no KeyError."""
    with Client(server.url) as client:
        client.put("stocks", "A", {})
        client.put("stocks", "B", {})
        with client.live("stocks", heartbeat=1) as live:
            assert live.wait_synced(5)
            items, values = iter(live.items()), iter(live.values())
            first, _ = next(items)
            assert next(values).id == first
            other = ({"A", "B"} - {first}).pop()
            assert live.wait_for_revision(client.delete("stocks", other).revision, 5)
            assert next(items)[0] == other and next(values).id == other
            assert other not in live and dict(live.items()) == {first: live[first]}
