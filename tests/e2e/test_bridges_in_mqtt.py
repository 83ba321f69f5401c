"""MQTT in: QoS 1 messages become changes, acknowledged after their commit, on a session the broker
keeps: what is published while watchroute is down arrives when it is back, nothing is lost
across a SIGKILL (duplicates bounded), and a restart of the broker (a mosquitto of the module's
own, with persistence) is ridden out."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx
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
from tests.support.brokers import Mosquitto
from tests.support.server import ServerProcess
from watchroute.bridges.inbound import MAX_BATCH

START = 60  # seconds a server may take to start on a loaded machine


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield server
    server.stop()


def publish(broker: Mosquitto, messages: list[tuple[str, bytes]], pace: float = 0.0) -> None:
    """Publish at QoS 1, each message acknowledged by the broker before the next."""

    async def run() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            for topic, body in messages:
                await client.publish(topic, body, qos=1)
                if pace:
                    await asyncio.sleep(pace)

    asyncio.run(run())


def bridge_up(client: httpx.Client, broker: Mosquitto, prefix: str, **config: object) -> tuple[str, str]:
    """A bridge of `<prefix>/+` into collection `<prefix>`, running; its name and the prefix."""
    prefix = unique(prefix)
    name = f"in-{prefix}"
    settings = {"url": broker.url, "topic": f"{prefix}/+", "collection": prefix, "id": "topic:1"}
    put_bridge(client, name, **{**settings, **config})
    wait_running(client, name)
    return name, prefix


def test_messages_become_changes_and_bad_ones_are_skipped(broker: Mosquitto, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, max_document_bytes=2000).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, topic = bridge_up(client, broker, "sensors", delete="empty")
            publish(
                broker,
                [
                    (f"{topic}/s1", b'{"temp": 21, "unit": "C"}'),
                    (f"{topic}/s2", b'{"temp": 19}'),
                    (f"{topic}/s3", b"twenty"),  # not JSON
                    (f"{topic}/s4", b"[21]"),  # not an object
                    (f"{topic}/s5", b'{"x": "' + b"x" * 5000 + b'"}'),  # too large
                    (f"{topic}/s1", b'{"temp": 22}'),
                    (f"{topic}/s2", b""),  # the delete marker
                ],
            )
            wait_for(lambda: status(client, name)["written"] == 4, 20)
            assert items_of(client, topic) == {"s1": {"temp": 22, "unit": "C"}}
            assert status(client, name)["rejected"] == 3
            events = [(e["type"], e["object"]["id"]) for e in log_of(client, topic)]
            assert events == [("ADDED", "s1"), ("ADDED", "s2"), ("MODIFIED", "s1"), ("DELETED", "s2")]
    finally:
        server.stop()


def test_published_while_watchroute_is_down_arrives_later(broker: Mosquitto, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, topic = bridge_up(client, broker, "offline")
            server.stop()
            publish(broker, [(f"{topic}/d{i}", b'{"n": %d}' % i) for i in range(30)])
            server.start(START)
            wait_for(lambda: len(items_of(client, topic)) == 30, 30)
            assert set(writes_by_id(log_of(client, topic)).values()) == {1}
            assert status(client, name)["state"] == "running"
    finally:
        server.stop()


def test_at_least_once_through_sigkill_of_watchroute(broker: Mosquitto, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    total = 1500
    kills = 2
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            _, topic = bridge_up(client, broker, "flow")
            messages = [(f"{topic}/m{i}", b'{"n": %d}' % i) for i in range(total)]
            publisher = threading.Thread(target=publish, args=(broker, messages, 0.002))
            publisher.start()
            for seen in (100, 600)[:kills]:
                wait_for(lambda: len(items_of(client, topic)) > seen, 30)  # noqa: B023 (called at once)
                server.kill()
                server.start(START)
            publisher.join(60)
            wait_for(lambda: len(items_of(client, topic)) == total, 60, 0.2, "every message written")
            counts = writes_by_id(log_of(client, topic))
            assert len(counts) == total  # nothing lost
            duplicates = sum(n - 1 for n in counts.values())
            assert duplicates <= kills * MAX_BATCH, duplicates
            assert max(counts.values()) <= 1 + kills
    finally:
        server.stop()


def test_broker_restart_the_bridge_reconnects(broker: Mosquitto, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, topic = bridge_up(client, broker, "again")
            publish(broker, [(f"{topic}/a{i}", b"{}") for i in range(20)])
            wait_for(lambda: len(items_of(client, topic)) == 20, 20)
            broker.restart()
            publish(broker, [(f"{topic}/b{i}", b"{}") for i in range(20)])
            wait_for(lambda: len(items_of(client, topic)) == 40, 60)
            assert status(client, name)["errors"] >= 1
            wait_running(client, name)
            assert set(writes_by_id(log_of(client, topic)).values()) == {1}
    finally:
        server.stop()
