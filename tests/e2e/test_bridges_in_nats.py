"""NATS JetStream in: messages become changes, exactly once across a SIGKILL of watchroute and a
restart of the broker (a nats-server of the module's own), on both stores."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import httpx
import nats
import pytest

from tests.support.bridging import wait_for
from tests.support.bridging_in import (
    items_of,
    log_of,
    put_bridge,
    status,
    unique,
    wait_running,
    writes_by_id,
)
from tests.support.brokers import NatsServer
from tests.support.server import ServerProcess

START = 60  # seconds a server may take to start on a loaded machine


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'watchroute.db'}"
    return request.getfixturevalue("pg_url")


def publish(url: str, messages: list[tuple[str, bytes, dict[str, str] | None]], pace: float = 0.0) -> None:
    """Publish to JetStream, each message acknowledged by the stream before the next."""

    async def run() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        for subject, body, headers in messages:
            await js.publish(subject, body, headers=headers)
            if pace:
                await asyncio.sleep(pace)
        await nc.close()

    asyncio.run(run())


def make_stream(url: str, subjects: list[str]) -> str:
    name = "S" + uuid.uuid4().hex[:8]

    async def run() -> None:
        nc = await nats.connect(url)
        await nc.jetstream().add_stream(name=name, subjects=subjects)
        await nc.close()

    asyncio.run(run())
    return name


def bridge_up(client: httpx.Client, broker: NatsServer, prefix: str, **config: object) -> tuple[str, str]:
    """A stream taking `<prefix>.>` and a bridge of it into collection `<prefix>`, running; the
    bridge's name and the prefix (made unique)."""
    prefix = unique(prefix)
    make_stream(broker.url, [f"{prefix}.>"])
    name = f"in-{prefix}"
    settings = {"url": broker.url, "topic": f"{prefix}.>", "collection": prefix, "id": "topic:1"}
    put_bridge(client, name, **{**settings, **config})
    wait_running(client, name)
    return name, prefix


def test_messages_become_changes_a_watcher_sees(broker: NatsServer, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, orders = bridge_up(client, broker, "orders", delete="header:op=delete")
            since = client.get(f"/v1/{orders}").json()["revision"]
            publish(
                broker.url,
                [
                    (f"{orders}.o1", b'{"status": "new", "total": 5}', None),
                    (f"{orders}.o2", b'{"status": "new"}', None),
                    (f"{orders}.o1", b'{"status": "paid"}', None),  # merged into o1
                    (f"{orders}.o2", b"", {"op": "delete"}),
                ],
            )
            seen: list[dict] = []
            cursor = since

            def watched() -> bool:
                nonlocal cursor
                r = client.get(f"/v1/{orders}", params={"watch": "longpoll", "since": cursor, "timeout": 5})
                seen.extend(e for e in r.json()["events"] if e["type"] != "BOOKMARK")
                cursor = r.json()["revision"]
                return len(seen) >= 4

            wait_for(watched, 20)
            assert [(e["type"], e["object"]["id"]) for e in seen] == [
                ("ADDED", "o1"),
                ("ADDED", "o2"),
                ("MODIFIED", "o1"),
                ("DELETED", "o2"),
            ]
            assert items_of(client, orders) == {"o1": {"status": "paid", "total": 5}}
            shown = status(client, name)
            assert shown["written"] == 4 and shown["rejected"] == 0
            assert shown["position"] == "4"  # the stream sequence of the last message
    finally:
        server.stop()


def test_a_first_start_gets_what_is_published_once_it_is_connected(broker: NatsServer) -> None:
    """The bridge is reported running once its source is connected: a message published then,
    before the runner first reads, must not be missed (a first start delivers only new ones)."""
    from watchroute.bridges.config import BridgeConfig
    from watchroute.bridges.sources.nats import JetStreamSource

    prefix = unique("first")
    make_stream(broker.url, [f"{prefix}.>"])
    config = BridgeConfig.model_validate(
        {"direction": "in", "url": broker.url, "topic": f"{prefix}.>", "collection": prefix, "id": "topic:1"}
    )

    async def run() -> list[bytes]:
        source = JetStreamSource(f"in-{prefix}", config)
        await source.connect()
        try:
            nc = await nats.connect(broker.url)
            await nc.jetstream().publish(f"{prefix}.a", b'{"n": 1}')
            await nc.close()
            messages = source.messages(None)
            assert isinstance(messages, AsyncGenerator)  # typed an iterator, made a generator: closed here
            first = await asyncio.wait_for(anext(messages), 10)
            await messages.aclose()
            return [first.body]
        finally:
            await source.close()

    assert asyncio.run(run()) == [b'{"n": 1}']


def test_bad_messages_are_counted_and_skipped(broker: NatsServer, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, max_document_bytes=2000).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, bad = bridge_up(client, broker, "bad", id="header:key")
            publish(
                broker.url,
                [
                    (f"{bad}.x", b"not json", {"key": "a"}),
                    (f"{bad}.x", b"[1, 2, 3]", {"key": "b"}),
                    (f"{bad}.x", b'{"no": "key header"}', None),
                    (f"{bad}.x", b'{"huge": "' + b"x" * 5000 + b'"}', {"key": "c"}),
                    (f"{bad}.x", b'{"fine": true}', {"key": "good"}),
                ],
            )
            wait_for(lambda: "good" in items_of(client, bad), 20)
            assert items_of(client, bad) == {"good": {"fine": True}}
            shown = wait_for(
                lambda: (s := status(client, name))["rejected"] == 4 and s,
                10,
                what=f"4 rejected, {status(client, name)}",
            )
            assert shown["written"] == 1 and shown["state"] == "running"
            metrics = client.get("/metrics").text
            assert any(
                line.startswith("watchroute_bridge_rejected_total") and f'bridge="{name}"' in line
                for line in metrics.splitlines()
            ), metrics[-2000:]
    finally:
        server.stop()


def test_exactly_once_through_sigkill_of_watchroute(
    broker: NatsServer, store_url: str, tmp_path: Path
) -> None:
    """Messages keep coming while the server is killed twice: each is written exactly once."""
    server = ServerProcess(tmp_path, database=store_url).start(START)
    total = 1500
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            _, flow = bridge_up(client, broker, "flow")
            messages = [(f"{flow}.m{i}", b'{"n": %d}' % i, None) for i in range(total)]
            publisher = threading.Thread(target=publish, args=(broker.url, messages, 0.002))
            publisher.start()
            for _ in range(2):
                wait_for(lambda: len(items_of(client, flow)) > 100, 30)
                server.kill()
                server.start(START)
            publisher.join(60)
            wait_for(lambda: len(items_of(client, flow)) == total, 60, 0.2, "every message written")
            counts = writes_by_id(log_of(client, flow))
            assert len(counts) == total
            assert set(counts.values()) == {1}, [(id, n) for id, n in counts.items() if n != 1][:10]
            assert items_of(client, flow)["m1234"] == {"n": 1234}
    finally:
        server.stop()


def test_broker_restart_the_bridge_reconnects(broker: NatsServer, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, again = bridge_up(client, broker, "again")
            publish(broker.url, [(f"{again}.a{i}", b"{}", None) for i in range(20)])
            wait_for(lambda: len(items_of(client, again)) == 20, 20)
            broker.restart()
            wait_running(client, name, timeout=60)
            publish(broker.url, [(f"{again}.b{i}", b"{}", None) for i in range(20)])
            wait_for(lambda: len(items_of(client, again)) == 40, 30)
            counts = writes_by_id(log_of(client, again))
            assert set(counts.values()) == {1}
    finally:
        server.stop()
