"""A watcher that stops reading is a cursor: the server buffers nothing for it, loses nothing."""

from __future__ import annotations

import json
import socket
import time

import httpx
import psutil
import pytest

from tests.support.metrics import scrape

EVENTS = 100_000
BATCH = 1_000
# What the server may grow by while one watcher sits blocked through 100,000 events: the
# window (10,000 encoded events) and the database's page cache, not the events themselves.
RSS_BOUND = 48 * 1024 * 1024


def blocked_sse_watch(port: int, since: int, heartbeat: int = 300) -> socket.socket:
    """An SSE watch whose reader does not read: a small receive buffer fills at once. The server
    gives up on a client that has not read for two heartbeats (and two seconds); these wait for
    longer, so they ask for the longest heartbeat."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /v1/slow?watch=true&since={since}&heartbeat={heartbeat} HTTP/1.1\r\nHost: localhost\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def write_events(url: str, n: int) -> int:
    with httpx.Client(base_url=url, timeout=60) as c:
        for start in range(0, n, BATCH):
            ops = [
                {"op": "put", "collection": "slow", "id": f"r{i % 5000}", "data": {"i": i, "pad": "x" * 60}}
                for i in range(start, start + BATCH)
            ]
            r = c.post("/v1/_batch", json={"ops": ops})
            r.raise_for_status()
        return r.json()["revision"]


def read_events(sock: socket.socket, until: int) -> tuple[list[int], dict | None]:
    """Read SSE messages until revision `until` or an ERROR; returns (revisions, error)."""
    sock.settimeout(30)
    buffer = b""
    revisions: list[int] = []
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return revisions, None
        buffer += chunk
        *messages, buffer = buffer.split(b"\n\n")
        for message in messages:
            for line in message.split(b"\n"):
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event["type"] == "ERROR":
                        return revisions, event["error"]
                    if event["type"] != "BOOKMARK":
                        revisions.append(event["revision"])
                    if event["revision"] >= until:
                        return revisions, None


@pytest.mark.timeout(240)
def test_blocked_watcher_costs_bounded_memory_and_gets_every_event(make_server):
    server = make_server(history_events=EVENTS * 2)
    process = psutil.Process(server.pid)
    sock = blocked_sse_watch(server.port, 0)
    rss_before = process.memory_info().rss
    last = write_events(server.url, EVENTS)
    grown = process.memory_info().rss - rss_before
    assert grown < RSS_BOUND, f"server grew {grown / 2**20:.0f} MiB for a blocked watcher"
    # /metrics shows how far behind it is: most of what was written.
    behind = scrape(server.url)
    assert last // 2 < behind["watchroute_watcher_lag_max_revisions"] <= last
    assert scrape(server.url, le="10000.0")["watchroute_watcher_lag_revisions_bucket"] == 0
    assert behind["watchroute_watcher_lag_revisions_gcount"] == 1
    revisions, error = read_events(sock, last)
    sock.close()
    assert error is None
    assert revisions == list(range(1, last + 1)), "every event, in order, once"


@pytest.mark.timeout(240)
def test_blocked_watcher_past_the_horizon_gets_410(make_server):
    server = make_server(history_events=1_000, compaction_interval=0.2, window_events=1_000)
    sock = blocked_sse_watch(server.port, 0)
    # More than the kernel's socket buffers can hold (several MiB on loopback), so the
    # watcher is truly behind when compaction passes it.
    last = write_events(server.url, 60_000)
    with httpx.Client(base_url=server.url) as c:  # let compaction pass the watcher by
        for _ in range(50):
            r = c.get("/v1/slow", params={"watch": "true", "since": 1, "timeout": 0.1})
            if r.status_code == 410:
                break
    revisions, error = read_events(sock, last)
    sock.close()
    assert error is not None and error["status"] == 410 and error["reason"] == "Expired"
    assert revisions == list(range(1, len(revisions) + 1)), "no gap before the error"
    # The blocked watcher at least; a probe that started inside the horizon may have been
    # passed by compaction as it read, and counts too.
    assert scrape(server.url, phase="behind")["watchroute_expired_total"] >= 1
    assert scrape(server.url, why="fell_behind")["watchroute_slow_watchers_ended_total"] >= 1
    assert scrape(server.url, phase="start")["watchroute_expired_total"] >= 1  # the probe's 410


def open_watches(url: str) -> float:
    return scrape(url)["watchroute_watchers"]


def test_a_client_that_reads_nothing_for_two_heartbeats_is_let_go(make_server):
    # As on a path that died without a word: what the server sends goes unanswered. It ends the
    # watch, and its place under the caps, a little after the client stopped hearing heartbeats;
    # a watcher that reads, with the same heartbeat, stays.
    server = make_server()
    write_events(server.url, 2 * BATCH)
    reading = socket.create_connection(("127.0.0.1", server.port))
    reading.sendall(
        b"GET /v1/slow?watch=true&heartbeat=1 HTTP/1.1\r\n"
        b"Host: localhost\r\nAccept: text/event-stream\r\n\r\n"
    )
    blocked = blocked_sse_watch(server.port, since=0, heartbeat=1)
    deadline = time.monotonic() + 30
    while open_watches(server.url) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    while open_watches(server.url) != 1:
        assert reading.recv(1 << 16), "the reading watcher must stay"
        assert time.monotonic() < started + 30, "the blocked watcher was never let go"
        time.sleep(0.2)
    assert time.monotonic() - started > 3  # not before two heartbeats and two seconds
    assert scrape(server.url, why="unresponsive")["watchroute_slow_watchers_ended_total"] == 1
    last = write_events(server.url, 10)
    revisions, error = read_events(reading, last)
    assert error is None and revisions[-1] == last
    reading.close()
    blocked.close()
