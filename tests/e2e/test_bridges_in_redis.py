"""Redis Streams in: entries become changes, exactly once across a SIGKILL of watchroute and a
restart of Redis (a redis-server of the module's own, its stream kept in an append-only file)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

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
from tests.support.brokers import RedisServer
from tests.support.server import ServerProcess

START = 60  # seconds a server may take to start on a loaded machine


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def add(url: str, key: str, entries: list[dict[str, str | bytes]], pace: float = 0.0) -> None:
    with redis.Redis.from_url(url) as r:
        for fields in entries:
            r.xadd(key, fields)
            if pace:
                time.sleep(pace)


def bridge_up(client: httpx.Client, broker: RedisServer, prefix: str, **config: object) -> tuple[str, str]:
    """A bridge of stream `<prefix>` into collection `<prefix>`, running; its name and the prefix."""
    prefix = unique(prefix)
    name = f"in-{prefix}"
    settings = {"url": broker.url, "topic": prefix, "collection": prefix, "id": "field:id"}
    put_bridge(client, name, **{**settings, **config})
    wait_running(client, name)
    return name, prefix


def test_entries_become_changes(broker: RedisServer, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, key = bridge_up(client, broker, "sensors", delete="field:gone")
            add(
                broker.url,
                key,
                [
                    {"id": "s1", "temp": "21"},  # the entry's fields are the document
                    {"body": b'{"id": "s2", "temp": 19.5, "unit": "C"}', "source": "lab"},
                    {"body": b'{"id": "s2", "temp": 20}'},  # merged into s2
                    {"body": b'{"id": "s1", "gone": true}'},
                ],
            )
            wait_for(lambda: status(client, name)["written"] == 4, 20)
            assert items_of(client, key) == {"s2": {"id": "s2", "temp": 20, "unit": "C"}}
            events = [(e["type"], e["object"]["id"]) for e in log_of(client, key)]
            assert events == [("ADDED", "s1"), ("ADDED", "s2"), ("MODIFIED", "s2"), ("DELETED", "s1")]
            with redis.Redis.from_url(broker.url) as r:
                last = r.xrevrange(key, count=1)[0][0].decode()
            assert status(client, name)["position"] == last
    finally:
        server.stop()


def test_bad_entries_are_counted_and_skipped(broker: RedisServer, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, max_document_bytes=2000).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, key = bridge_up(client, broker, "bad", write="put")
            schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
            assert client.put(f"/v1/_schemas/{key}", json=schema).status_code == 201
            add(
                broker.url,
                key,
                [
                    {"body": b"{not json"},
                    {"body": b'"a string"'},
                    {"body": b'{"n": 1}'},  # no id
                    {"body": b'{"id": "big", "x": "' + b"x" * 5000 + b'"}'},
                    {"body": b'{"id": "typed", "n": "one"}'},  # the schema refuses it
                    {"body": b'{"id": "good", "n": 2}'},
                ],
            )
            wait_for(lambda: "good" in items_of(client, key), 20)
            assert items_of(client, key) == {"good": {"id": "good", "n": 2}}
            shown = wait_for(lambda: (s := status(client, name))["rejected"] == 5 and s, 10)
            assert shown["written"] == 1 and shown["state"] == "running"
            # Rejected entries are not read again after a restart: their position was stored.
            server.stop()
            server.start(START)
            wait_running(client, name)
            add(broker.url, key, [{"body": b'{"id": "after", "n": 3}'}])
            wait_for(lambda: "after" in items_of(client, key), 20)
            assert status(client, name)["rejected"] == 0  # counted since this start
    finally:
        server.stop()


def test_exactly_once_through_sigkill_of_watchroute(broker: RedisServer, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    total = 1500
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            _, key = bridge_up(client, broker, "flow")
            entries: list[dict[str, str | bytes]] = [{"id": f"m{i}", "n": str(i)} for i in range(total)]
            publisher = threading.Thread(target=add, args=(broker.url, key, entries, 0.002))
            publisher.start()
            for seen in (100, 600):
                wait_for(lambda: len(items_of(client, key)) > seen, 30)  # noqa: B023 (called at once)
                server.kill()
                server.start(START)
            publisher.join(60)
            wait_for(lambda: len(items_of(client, key)) == total, 60, 0.2, "every entry written")
            counts = writes_by_id(log_of(client, key))
            assert len(counts) == total
            assert set(counts.values()) == {1}, [(id, n) for id, n in counts.items() if n != 1][:10]
    finally:
        server.stop()


def test_redis_restart_the_bridge_reconnects(broker: RedisServer, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start(START)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            name, key = bridge_up(client, broker, "again")
            add(broker.url, key, [{"id": f"a{i}"} for i in range(20)])
            wait_for(lambda: len(items_of(client, key)) == 20, 20)
            broker.stop()
            wait_for(lambda: status(client, name)["state"] == "paused", 30)
            broker.start()
            wait_running(client, name, timeout=60)
            add(broker.url, key, [{"id": f"b{i}"} for i in range(20)])
            wait_for(lambda: len(items_of(client, key)) == 40, 30)
            assert set(writes_by_id(log_of(client, key)).values()) == {1}
    finally:
        server.stop()
