"""OUT to Redis Streams: each change an entry whose id is its revision, in order; through a
SIGKILL of watchroute nothing lost or doubled; through a restart of Redis (which keeps nothing
on disk here, so the stream starts empty) the bridge pauses and publishes what it missed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.bridging import START_SECONDS, put_bridge, status, wait_for, write_changes
from tests.support.brokers import BrokerProcess, RedisServer
from tests.support.server import ServerProcess


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = RedisServer(tmp_path / "redis", durable=False).start(timeout=START_SECONDS)
    yield proc
    proc.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "s")
    proc.workdir.mkdir()
    proc.start(timeout=START_SECONDS)
    yield proc
    proc.stop()


def entries(url: str, stream: str) -> list[tuple[int, dict[bytes, bytes]]]:
    try:
        with redis.Redis.from_url(url) as r:
            return [(int(eid.decode().split("-")[0]), fields) for eid, fields in r.xrange(stream)]
    except redis.ConnectionError:
        return []


def revisions_in(url: str, stream: str) -> list[int]:
    return [rev for rev, _ in entries(url, stream)]


def test_changes_arrive_in_revision_order_as_entry_ids(broker: BrokerProcess, server: ServerProcess) -> None:
    put_bridge(server.url, "o", direction="out", url=broker.url, collection="orders", stream="wr:orders")
    written = write_changes(server.url, "orders", 0, 30)
    wait_for(lambda: revisions_in(broker.url, "wr:orders") == written)
    rev, fields = entries(broker.url, "wr:orders")[0]
    assert fields[b"Watchroute-Revision"] == str(rev).encode()
    assert b'"revision":%d' % rev in fields[b"event"]


def test_a_sigkill_of_watchroute_loses_and_doubles_nothing(
    broker: BrokerProcess, server: ServerProcess
) -> None:
    put_bridge(server.url, "k", direction="out", url=broker.url, collection="orders", stream="wr:k")
    written = write_changes(server.url, "orders", 0, 300)
    wait_for(lambda: len(revisions_in(broker.url, "wr:k")) > 20, every=0.01)
    server.kill()
    server.start(timeout=START_SECONDS)
    written += write_changes(server.url, "orders", 300, 50)
    wait_for(lambda: revisions_in(broker.url, "wr:k") == written)


def test_a_restart_of_redis_pauses_the_bridge_and_it_catches_up(
    broker: BrokerProcess, server: ServerProcess
) -> None:
    put_bridge(server.url, "r", direction="out", url=broker.url, collection="orders", stream="wr:r")
    before = write_changes(server.url, "orders", 0, 20)
    wait_for(lambda: revisions_in(broker.url, "wr:r") == before)
    wait_for(lambda: status(server.url, "r")["lag"] == 0)  # its position stored
    broker.stop()
    during = write_changes(server.url, "orders", 20, 30)
    wait_for(lambda: status(server.url, "r")["state"] == "paused")
    broker.start(timeout=START_SECONDS)  # empty: this Redis keeps nothing on disk
    after = write_changes(server.url, "orders", 50, 10)
    # What the bridge had published was lost with Redis' memory; the rest arrives, once each.
    wait_for(lambda: revisions_in(broker.url, "wr:r") == during + after)
    wait_for(lambda: status(server.url, "r")["state"] == "running")
