"""OUT to RabbitMQ: each change a persistent message whose message_id is its revision, in
order; through a SIGKILL of watchroute nothing is lost (at least once: a change accepted after
the last stored position is published again, documented); through an outage of the broker
(the connection cut by a proxy: the machine's RabbitMQ serves other tests meanwhile) the bridge
pauses and catches up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from tests.support.bridging import START_SECONDS, put_bridge, status, wait_for, write_changes
from tests.support.server import ServerProcess
from tests.support.tcp_proxy import TCPProxy

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


class Queue:
    """The messages of a queue, drained into a list as they come."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []

    def drain(self) -> list[int]:
        async def run() -> None:
            connection = await aio_pika.connect(RABBITMQ)
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(self.name, durable=True)
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    self.messages.append(message)

        asyncio.run(run())
        return [int(m.message_id or 0) for m in self.messages]

    def delete(self) -> None:
        async def run() -> None:
            connection = await aio_pika.connect(RABBITMQ)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(self.name)

        asyncio.run(run())


@pytest.fixture
def queue() -> Iterator[Queue]:
    q = Queue("wr-test-" + uuid.uuid4().hex[:10])
    yield q
    q.delete()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "s")
    proc.workdir.mkdir()
    proc.start(timeout=START_SECONDS)
    yield proc
    proc.stop()


def test_changes_arrive_in_revision_order_as_persistent_messages(queue: Queue, server: ServerProcess) -> None:
    put_bridge(server.url, "o", direction="out", url=RABBITMQ, collection="orders", subject=queue.name)
    written = write_changes(server.url, "orders", 0, 30)
    wait_for(lambda: queue.drain() == written)
    first = queue.messages[0]
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.headers["Watchroute-Collection"] == "orders"
    assert b'"revision":%d' % written[0] in first.body
    assert "guest:guest" not in str(status(server.url, "o"))


def test_a_sigkill_of_watchroute_loses_nothing(queue: Queue, server: ServerProcess) -> None:
    put_bridge(server.url, "k", direction="out", url=RABBITMQ, collection="orders", subject=queue.name)
    written = write_changes(server.url, "orders", 0, 300)
    wait_for(lambda: len(queue.drain()) > 20, every=0.01)
    server.kill()
    server.start(timeout=START_SECONDS)
    written += write_changes(server.url, "orders", 300, 50)

    def complete() -> bool:
        got = queue.drain()
        return set(got) >= set(written)

    wait_for(complete)
    got = [int(m.message_id or 0) for m in queue.messages]
    # At least once: a repeat is a change accepted after the last stored position, sent again in order.
    assert sorted(set(got)) == written
    assert len(got) - len(written) <= 256  # at most one batch of them


def test_an_outage_of_rabbitmq_pauses_the_bridge_and_it_catches_up(
    queue: Queue, server: ServerProcess
) -> None:
    proxy = TCPProxy(5672).start()
    try:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        put_bridge(server.url, "r", direction="out", url=url, collection="orders", subject=queue.name)
        written = write_changes(server.url, "orders", 0, 20)
        wait_for(lambda: queue.drain() == written)
        proxy.cut()
        written += write_changes(server.url, "orders", 20, 30)
        paused = wait_for(lambda: (s := status(server.url, "r"))["state"] == "paused" and s)
        assert paused["error"]
        proxy.restore()
        wait_for(lambda: set(queue.drain()) == set(written))
        assert sorted(int(m.message_id or 0) for m in queue.messages) == written  # nothing doubled here
        wait_for(lambda: status(server.url, "r")["state"] == "running")
    finally:
        proxy.cut()
