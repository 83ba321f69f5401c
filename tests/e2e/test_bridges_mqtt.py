"""OUT to MQTT: each change a QoS 1 message, in revision order; through a SIGKILL of watchroute
nothing is lost (at least once, documented); through a restart of the broker the bridge pauses
and catches up."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.bridging import START_SECONDS, put_bridge, status, wait_for, write_changes
from tests.support.brokers import BrokerProcess, Mosquitto
from tests.support.server import ServerProcess


class Subscriber:
    """A persistent MQTT session (QoS 1) that keeps every message it is sent, reconnecting
    after a restart of the broker."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[dict[str, object]] = []
        self.topics: list[str] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="wr-test-sub", clean_session=False)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]  # paho takes any seconds, types int
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client
        assert self._subscribed.wait(30)

    def _on_message(self, _client: object, _data: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(json.loads(message.payload))
            self.topics.append(message.topic)

    def revisions(self) -> list[int]:
        with self._lock:
            return [int(m["revision"]) for m in self.messages]  # type: ignore[call-overload]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = Mosquitto(tmp_path / "mqtt").start(timeout=START_SECONDS)
    yield proc
    proc.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "s")
    proc.workdir.mkdir()
    proc.start(timeout=START_SECONDS)
    yield proc
    proc.stop()


def test_changes_arrive_in_revision_order_on_each_resources_topic(
    broker: BrokerProcess, server: ServerProcess
) -> None:
    sub = Subscriber(broker.port, "wr/orders/#")
    try:
        put_bridge(
            server.url, "o", direction="out", url=broker.url, collection="orders", topic="wr/orders/{id}"
        )
        written = write_changes(server.url, "orders", 0, 30)
        wait_for(lambda: sub.revisions() == written)
        assert sub.topics[0] == "wr/orders/" + sub.messages[0]["object"]["id"]  # type: ignore[index]
    finally:
        sub.stop()


def test_a_sigkill_of_watchroute_loses_nothing(broker: BrokerProcess, server: ServerProcess) -> None:
    sub = Subscriber(broker.port, "wr/k")
    try:
        put_bridge(server.url, "k", direction="out", url=broker.url, collection="orders", topic="wr/k")
        written = write_changes(server.url, "orders", 0, 300)
        wait_for(lambda: len(sub.revisions()) > 20, every=0.01)
        server.kill()
        server.start(timeout=START_SECONDS)
        written += write_changes(server.url, "orders", 300, 50)
        wait_for(lambda: set(sub.revisions()) >= set(written))
        got = sub.revisions()
        assert sorted(set(got)) == written
        assert len(got) - len(written) <= 256  # at least once: at most a batch again
    finally:
        sub.stop()


def test_a_restart_of_the_broker_pauses_the_bridge_and_it_catches_up(
    broker: BrokerProcess, server: ServerProcess
) -> None:
    sub = Subscriber(broker.port, "wr/r")
    try:
        put_bridge(server.url, "r", direction="out", url=broker.url, collection="orders", topic="wr/r")
        written = write_changes(server.url, "orders", 0, 20)
        wait_for(lambda: sub.revisions() == written)
        broker.stop()
        written += write_changes(server.url, "orders", 20, 30)
        paused = wait_for(lambda: (s := status(server.url, "r"))["state"] == "paused" and s)
        assert paused["error"]
        broker.start(timeout=START_SECONDS)
        wait_for(lambda: set(sub.revisions()) == set(written))
        assert sorted(set(sub.revisions())) == written
        wait_for(lambda: status(server.url, "r")["state"] == "running")
    finally:
        sub.stop()
