"""RabbitMQ in: messages become changes, acknowledged after their commit: nothing lost across a
SIGKILL of watchroute, duplicates bounded by what was committed and not yet acknowledged; a
malformed message is dead-lettered. The machine's broker, in a virtual host of the module's own;
a broker that drops every connection stands for its restart (restarting it would disturb others)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from aio_pika.abc import HeadersType

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
from tests.support.server import ServerProcess
from watchroute.bridges.inbound import MAX_BATCH

START = 60  # seconds a server may take to start on a loaded machine


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """The URL of a virtual host of this module's own on the machine's RabbitMQ."""
    vhost = unique("watchroute-test")
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    rabbitmqctl("delete_vhost", vhost)


def publish(url: str, routing_key: str, messages: list[tuple[bytes, HeadersType]], pace: float = 0) -> None:
    """Publish persistent messages to the default exchange, each confirmed by the broker."""

    async def run() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        for body, headers in messages:
            message = aio_pika.Message(body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=routing_key)
            if pace:
                await asyncio.sleep(pace)
        await connection.close()

    asyncio.run(run())


def declare_with_dead_letters(url: str, queue: str) -> str:
    """`queue`, whose rejected messages go to the queue returned."""
    dead = f"{queue}-dead"

    async def run() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(dead, aio_pika.ExchangeType.FANOUT, durable=True)
        dead_queue = await channel.declare_queue(dead, durable=True)
        await dead_queue.bind(exchange)
        await channel.declare_queue(queue, durable=True, arguments={"x-dead-letter-exchange": dead})
        await connection.close()

    asyncio.run(run())
    return dead


def queued(url: str, queue: str) -> int:
    async def run() -> int:
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        await connection.close()
        return declared.declaration_result.message_count or 0

    return asyncio.run(run())


def bridge_up(client: httpx.Client, url: str, prefix: str, **config: object) -> tuple[str, str]:
    """A bridge of queue `<prefix>` into collection `<prefix>`, running; its name and the prefix."""
    prefix = unique(prefix)
    name = f"in-{prefix}"
    settings = {"url": url, "topic": prefix, "collection": prefix, "id": "header:id"}
    put_bridge(client, name, **{**settings, **config})
    wait_running(client, name)
    return name, prefix


def test_messages_become_changes_and_bad_ones_are_dead_lettered(broker: str, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, max_document_bytes=2000).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            queue = unique("orders")
            dead = declare_with_dead_letters(broker, queue)
            name = f"in-{queue}"
            put_bridge(
                client,
                name,
                url=broker,
                topic=queue,
                collection=queue,
                id="header:id",
                delete="header:op=delete",
            )
            wait_running(client, name)
            publish(
                broker,
                queue,
                [
                    (b'{"status": "new"}', {"id": "o1"}),
                    (b'{"status": "new"}', {"id": "o2"}),
                    (b"not json", {"id": "o3"}),
                    (b'{"status": "new"}', {}),  # no id
                    (b'{"x": "' + b"x" * 5000 + b'"}', {"id": "o4"}),
                    (b'{"status": "paid"}', {"id": "o1"}),
                    (b"", {"id": "o2", "op": "delete"}),
                ],
            )
            wait_for(lambda: status(client, name)["written"] == 4, 20)
            assert items_of(client, queue) == {"o1": {"status": "paid"}}
            assert status(client, name)["rejected"] == 3
            wait_for(lambda: queued(broker, dead) == 3, 10, 0.2, "3 dead letters")
            assert queued(broker, queue) == 0  # every message acknowledged or dead-lettered
    finally:
        server.stop()


def test_at_least_once_through_sigkill_of_watchroute(broker: str, tmp_path: Path) -> None:
    """Nothing is lost; a message is written twice only when the kill fell between its commit
    and its acknowledgement, so at most one transaction's messages per kill."""
    server = ServerProcess(tmp_path).start(START)
    total = 1500
    kills = 2
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            _, queue = bridge_up(client, broker, "flow")
            messages = [(b'{"n": %d}' % i, {"id": f"m{i}"}) for i in range(total)]
            publisher = threading.Thread(target=publish, args=(broker, queue, messages, 0.002))
            publisher.start()
            for seen in (100, 600)[:kills]:
                wait_for(lambda: len(items_of(client, queue)) > seen, 30)  # noqa: B023 (called at once)
                server.kill()
                server.start(START)
            publisher.join(60)
            wait_for(lambda: len(items_of(client, queue)) == total, 60, 0.2, "every message written")
            counts = writes_by_id(log_of(client, queue))
            assert len(counts) == total  # nothing lost
            duplicates = sum(n - 1 for n in counts.values())
            print(f"duplicates after {kills} kills: {duplicates}")
            assert duplicates <= kills * MAX_BATCH
            assert max(counts.values()) <= 1 + kills
            wait_for(lambda: queued(broker, queue) == 0, 20)
    finally:
        server.stop()


def test_dropped_connections_the_bridge_reconnects(broker: str, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, queue = bridge_up(client, broker, "again")
            publish(broker, queue, [(b"{}", {"id": f"a{i}"}) for i in range(20)])
            wait_for(lambda: len(items_of(client, queue)) == 20, 20)
            vhost = broker.rsplit("/", 1)[1]
            rabbitmqctl("close_all_connections", "-p", vhost, "test: the broker drops its connections")
            # Published while the bridge may be away: the queue keeps them.
            publish(broker, queue, [(b"{}", {"id": f"b{i}"}) for i in range(20)])
            wait_for(lambda: len(items_of(client, queue)) == 40, 60)
            assert status(client, name)["errors"] >= 1
            wait_running(client, name)
            assert set(writes_by_id(log_of(client, queue)).values()) == {1}
    finally:
        server.stop()


def test_an_exchange_and_routing_key_feed_a_queue_of_the_bridge(broker: str, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            exchange = unique("events")

            async def declare() -> None:
                connection = await aio_pika.connect(broker)
                channel = await connection.channel()
                await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
                await connection.close()

            asyncio.run(declare())
            coll = unique("readings")
            put_bridge(
                client,
                f"in-{coll}",
                url=broker,
                exchange=exchange,
                topic="sensor.*",
                collection=coll,
                id="topic:1",
            )
            wait_running(client, f"in-{coll}")

            async def send() -> None:
                connection = await aio_pika.connect(broker)
                channel = await connection.channel()
                target = await channel.get_exchange(exchange)
                for key in ("sensor.s1", "sensor.s2", "other.s3"):
                    await target.publish(aio_pika.Message(b'{"v": 1}'), routing_key=key)
                await connection.close()

            asyncio.run(send())
            wait_for(lambda: len(items_of(client, coll)) == 2, 20)
            assert set(items_of(client, coll)) == {"s1", "s2"}
    finally:
        server.stop()
