"""OUT to NATS JetStream: every change in revision order with its revision as the message id;
through a SIGKILL of watchroute nothing lost or doubled, through a restart of NATS the bridge
pauses and catches up; on PostgreSQL too, with one leader of two instances."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from tests.support.bridging import START_SECONDS, put_bridge, status, wait_for, write_changes
from tests.support.brokers import BrokerProcess, NatsServer
from tests.support.server import ServerProcess


def stream_messages(url: str, stream: str) -> list[tuple[int, dict[str, str], bytes]]:
    """Every message of `stream`: (revision header, headers, body), in stream order."""

    async def read() -> list[tuple[int, dict[str, str], bytes]]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                return []
            if info.state.messages == 0:
                # An empty stream reports first_seq 0, and no message has that sequence.
                return []
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream, seq)
                headers = msg.headers or {}
                found.append((int(headers["Nats-Msg-Id"]), headers, msg.data or b""))
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def revisions_in(url: str, stream: str) -> list[int]:
    return [rev for rev, _, _ in stream_messages(url, stream)]


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    proc = NatsServer(tmp_path / "nats").start(timeout=START_SECONDS)
    yield proc
    proc.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield None
        return
    from tests.support.postgres import fresh_database

    with fresh_database() as url:
        yield url


def test_changes_arrive_in_revision_order_with_their_revision_as_message_id(
    broker: BrokerProcess, database: str | None, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path / "s", database=database)
    server.workdir.mkdir()
    server.start(timeout=START_SECONDS)
    try:
        put_bridge(
            server.url,
            "orders-out",
            direction="out",
            url=broker.url,
            collection="orders",
            subject="wr.orders",
            stream="ORDERS",
        )
        written = write_changes(server.url, "orders", 0, 40)
        write_changes(server.url, "other", 0, 5)  # not the bridge's collection
        wait_for(lambda: revisions_in(broker.url, "ORDERS") == written)
        messages = stream_messages(broker.url, "ORDERS")
        first = messages[0]
        assert first[1]["Watchroute-Collection"] == "orders"
        assert b'"revision":%d' % first[0] in first[2]
        shown = wait_for(lambda: (s := status(server.url, "orders-out"))["lag"] == 0 and s)
        assert shown["state"] == "running"
        assert shown["published"] == 40
        # The cursor: past the other collection's changes too, which concern the bridge not.
        assert int(shown["position"]) > written[-1]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'watchroute_bridge_published_total{bridge="orders-out"} 40.0' in metrics
        assert 'watchroute_bridge_state{bridge="orders-out",state="running"} 1.0' in metrics
        assert 'watchroute_bridge_lag{bridge="orders-out"} 0.0' in metrics
        [row] = httpx.get(f"{server.url}/ui/status.json").json()["bridges"]
        assert row == {"name": "orders-out", "state": "running", "lag": 0, "published": 40, "errors": 0}
    finally:
        server.stop()


def test_a_filter_publishes_membership_like_a_watch(broker: BrokerProcess, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "s")
    server.workdir.mkdir()
    server.start(timeout=START_SECONDS)
    try:
        put_bridge(
            server.url,
            "paid",
            direction="out",
            url=broker.url,
            collection="orders",
            subject="wr.paid",
            stream="PAID",
            filter="status=paid",
        )
        with httpx.Client(base_url=server.url) as c:
            c.put("/v1/orders/a", json={"status": "new"})
            c.put("/v1/orders/a", json={"status": "paid"})
            c.put("/v1/orders/b", json={"status": "new"})
            c.put("/v1/orders/a", json={"status": "shipped"})
        messages = wait_for(lambda: len(m := stream_messages(broker.url, "PAID")) == 2 and m)
        assert [h["Watchroute-Type"] for _, h, _ in messages] == ["ADDED", "DELETED"]
        assert [h["Watchroute-Id"] for _, h, _ in messages] == ["a", "a"]
    finally:
        server.stop()


def test_a_sigkill_of_watchroute_loses_and_doubles_nothing(broker: BrokerProcess, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "s")
    server.workdir.mkdir()
    server.start(timeout=START_SECONDS)
    put_bridge(
        server.url, "k", direction="out", url=broker.url, collection="orders", subject="wr.k", stream="K"
    )
    written = write_changes(server.url, "orders", 0, 300)
    wait_for(lambda: len(revisions_in(broker.url, "K")) > 20, every=0.01)
    server.kill()  # most likely in the middle of publishing
    server.start(timeout=START_SECONDS)
    try:
        written += write_changes(server.url, "orders", 300, 50)
        wait_for(lambda: revisions_in(broker.url, "K") == written)
    finally:
        server.stop()


def test_a_restart_of_nats_pauses_the_bridge_and_it_catches_up(broker: BrokerProcess, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "s")
    server.workdir.mkdir()
    server.start(timeout=START_SECONDS)
    try:
        put_bridge(
            server.url, "r", direction="out", url=broker.url, collection="orders", subject="wr.r", stream="R"
        )
        written = write_changes(server.url, "orders", 0, 20)
        wait_for(lambda: revisions_in(broker.url, "R") == written)
        broker.stop()
        written += write_changes(server.url, "orders", 20, 30)
        paused = wait_for(lambda: (s := status(server.url, "r"))["state"] == "paused" and s)
        assert paused["error"]
        assert paused["lag"] > 0
        broker.start(timeout=START_SECONDS)
        wait_for(lambda: revisions_in(broker.url, "R") == written)
        wait_for(lambda: status(server.url, "r")["state"] == "running")
    finally:
        server.stop()


def leaders(servers: list[ServerProcess], name: str) -> list[bool]:
    return [httpx.get(f"{p.url}/v1/_bridges/{name}", timeout=10).json()["status"]["leader"] for p in servers]


def test_two_instances_on_postgresql_publish_each_change_once(
    broker: BrokerProcess, pg_url: str, tmp_path: Path
) -> None:
    servers = []
    for n in range(2):
        (tmp_path / f"i{n}").mkdir()
        servers.append(ServerProcess(tmp_path / f"i{n}", database=pg_url).start(timeout=START_SECONDS))
    try:
        put_bridge(
            servers[0].url,
            "two",
            direction="out",
            url=broker.url,
            collection="orders",
            subject="wr.two",
            stream="TWO",
        )
        wait_for(lambda: sorted(leaders(servers, "two")) == [False, True])
        written = write_changes(servers[0].url, "orders", 0, 20) + write_changes(
            servers[1].url, "orders", 20, 20
        )
        wait_for(lambda: revisions_in(broker.url, "TWO") == written)
        leader = servers[leaders(servers, "two").index(True)]
        follower = next(p for p in servers if p is not leader)
        # The leader's state, as it stores it (once a moment): the follower shows it.
        wait_for(lambda: status(follower.url, "two")["state"] == "running")
        leader.kill()
        written += write_changes(follower.url, "orders", 40, 20)
        wait_for(lambda: revisions_in(broker.url, "TWO") == written)
        assert status(follower.url, "two")["leader"] is True
    finally:
        for p in servers:
            p.stop()


def test_past_the_history_horizon_the_bridge_says_so_and_goes_on_from_now(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path / "s", history_events=20, compaction_interval=0.2, window_events=16)
    server.workdir.mkdir()
    server.start(timeout=START_SECONDS)
    try:
        put_bridge(
            server.url, "h", direction="out", url=broker.url, collection="orders", subject="wr.h", stream="H"
        )
        before = write_changes(server.url, "orders", 0, 5)
        wait_for(lambda: revisions_in(broker.url, "H") == before)
        broker.stop()
        write_changes(server.url, "orders", 5, 100)  # more than the log keeps
        wait_for(lambda: status(server.url, "h")["state"] == "paused")
        broker.start(timeout=START_SECONDS)
        shown = wait_for(lambda: (s := status(server.url, "h"))["restarts_from_now"] == 1 and s)
        assert "compacted" in shown["error"]
        after = write_changes(server.url, "orders", 105, 5)
        wait_for(lambda: revisions_in(broker.url, "H")[-5:] == after)
        assert revisions_in(broker.url, "H") == before + after
    finally:
        server.stop()
    assert "WARNING" in server.log() and "compacted past revision" in server.log()
