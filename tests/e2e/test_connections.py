"""Connections that send nothing, or drip their head, against a real server: they are closed
after the head's deadline, capped per address and in total, and never take the descriptors
the store needs."""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from tests.support.server import ServerProcess

HEADER_TIMEOUT = 2.0


class LimitedServer(ServerProcess):
    """A server process started with a limit on open files of (`soft`, `hard`)."""

    def __init__(self, workdir: Path, soft: int, hard: int, **settings: Any) -> None:
        super().__init__(workdir, **settings)
        self.nofile = (soft, hard)

    def start(self, timeout: float = 20.0) -> ServerProcess:
        popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen

        def limited(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
            limit = self.nofile
            return popen(
                *args, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit), **kwargs
            )

        with mock.patch.object(subprocess, "Popen", limited):
            return super().start(timeout)


def idle(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """`count` connections that send nothing."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `within` seconds, and what it sent first."""
    sock.settimeout(within)
    received = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, received
            received += chunk
    except (ConnectionResetError, BrokenPipeError):
        return True, received
    except TimeoutError:
        return False, received


def healthz(port: int, source: str = "127.0.0.1") -> int | None:
    """The status of GET /healthz on a new connection, or None when the connection was closed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return None
    return int(answer.split(b" ", 2)[1]) if answer else None


def audit_lines(server: ServerProcess) -> list[dict]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"ts"')]
    return [line for line in lines if line.get("audit") == "connection_limited"]


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("capped"), max_connections_per_ip=20, header_timeout=HEADER_TIMEOUT
    ).start()
    yield proc
    proc.stop()


def test_connections_beyond_the_per_address_cap_are_closed(capped: ServerProcess) -> None:
    port = capped.port
    held = idle(port, 20)
    try:
        time.sleep(0.2)
        over = idle(port, 3)
        for sock in over:
            was_closed, sent = closed_by_server(sock, 1.0)
            assert was_closed and sent == b""  # closed at accept, before any request
        close_all(over)
        assert healthz(port) is None  # this address has no place left...
        assert healthz(port, source="127.0.0.2") == 200  # ...another address does
        # The idle connections meet the head's deadline; then the address is served again.
        started = time.monotonic()
        for sock in held:
            was_closed, sent = closed_by_server(sock, HEADER_TIMEOUT + 3)
            assert was_closed and sent.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert time.monotonic() - started < HEADER_TIMEOUT + 2
        assert healthz(port) == 200
    finally:
        close_all(held)
    # Every hit is logged: the first at once, the rest of that second in one line after it.
    # 3 connections and a /healthz over the cap; 20 heads that never came.
    expected = {"max_connections_per_ip": 4, "header_timeout": 20}
    deadline = time.monotonic() + 3
    while True:
        lines = audit_lines(capped)
        hits = {why: sum(line["times"] for line in lines if line["why"] == why) for why in expected}
        if hits == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert hits == expected
    assert len(lines) <= 5 and all(line["address"] == "127.0.0.1" for line in lines)
    scraped = httpx.get(capped.url + "/metrics", timeout=5).text
    assert 'watchroute_refusals_total{event="connection_limited"} 24.0' in scraped


def test_a_dripping_head_is_closed_after_the_deadline(capped: ServerProcess) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 100
    with socket.create_connection(("127.0.0.1", capped.port), timeout=5) as sock:
        started = time.monotonic()
        sock.settimeout(0.5)  # one byte every half second
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
            break
        else:
            pytest.fail("the dripping connection was never closed")
        elapsed = time.monotonic() - started
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert HEADER_TIMEOUT - 0.1 <= elapsed <= HEADER_TIMEOUT + 1.0


def test_the_next_request_on_a_kept_alive_connection_has_the_deadline_too(capped: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", capped.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: loc")  # and no more
        was_closed, sent = closed_by_server(sock, HEADER_TIMEOUT + 3)
        assert was_closed and sent.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < HEADER_TIMEOUT + 1.5


def opened(port: int, head: bytes, status: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(head)
    assert sock.recv(4096).startswith(status)
    return sock


def sse_watch(port: int) -> socket.socket:
    head = b"GET /v1/slots?watch=true HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    return opened(port, head, b"HTTP/1.1 200 OK")


def websocket(port: int) -> socket.socket:
    head = (
        b"GET /v1/_watch HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    return opened(port, head, b"HTTP/1.1 101 ")


@pytest.mark.parametrize("open_one", [sse_watch, websocket], ids=["sse", "websocket"])
def test_a_watch_holds_its_place_until_it_closes(capped: ServerProcess, open_one: Any) -> None:
    """A stream taken over from the HTTP server, and a WebSocket, count under the cap for as
    long as they are open (the head's deadline does not end them), and free it when they close."""
    port = capped.port
    time.sleep(0.2)  # the places of the connections earlier tests closed are given back
    watches = [open_one(port) for _ in range(20)]
    try:
        time.sleep(HEADER_TIMEOUT + 0.5)
        assert healthz(port) is None
        assert not any(closed_by_server(sock, 0.01)[0] for sock in watches)
    finally:
        close_all(watches)
    deadline = time.monotonic() + 3
    while healthz(port) != 200:
        assert time.monotonic() < deadline, "closed watches kept their places"
        time.sleep(0.1)


def test_idle_connections_leave_the_store_its_descriptors(tmp_path: Path) -> None:
    """200 idle connections under a total cap below the descriptor limit: health and writes go
    on; past the cap new connections are closed at accept, the store still opens files (writes,
    compaction), and once the idle ones meet the deadline the server answers new ones again.
    The server starts with a soft limit of 128 and raises it to the hard limit, 384."""
    server = LimitedServer(
        tmp_path,
        soft=128,
        hard=384,
        fd_reserve=64,
        max_connections_per_ip=0,
        header_timeout=5,
        history_events=2,
        compaction_interval=0.2,
    ).start()
    held: list[socket.socket] = []
    try:
        limits = Path(f"/proc/{server.pid}/limits").read_text()
        assert [line.split()[3:5] for line in limits.splitlines() if "open files" in line] == [["384", "384"]]
        with httpx.Client(base_url=server.url, timeout=5) as client:
            assert client.put("/v1/fd/warm", json={}).status_code == 201  # a kept-alive connection
            held = idle(server.port, 200)
            assert healthz(server.port) == 200
            assert client.put("/v1/fd/a", json={"n": 1}).status_code == 201
            # Past the cap (the limit less the reserve and what the process holds at start).
            more = idle(server.port, 150)
            time.sleep(0.3)
            closed, _, _ = select.select(more, [], [], 0)  # an end of stream or a reset
            assert 10 < len(closed) < 150
            held += more
            assert healthz(server.port) is None
            # The store's own files: every write commits, compaction opens its connection.
            for n in range(20):
                assert client.put(f"/v1/fd/d{n}", json={"n": n}).status_code == 201
            deadline = time.monotonic() + 3
            while client.get("/v1/fd", params={"watch": "longpoll", "since": 1}).status_code != 410:
                assert time.monotonic() < deadline, "compaction did not run while connections were capped"
                time.sleep(0.1)
            assert client.put("/v1/fd/after", json={}).status_code == 201
        # The idle ones meet the deadline; new connections are served again.
        was_closed, sent = closed_by_server(held[0], 8)
        assert was_closed and sent.startswith(b"HTTP/1.1 408 ")
        time.sleep(0.2)
        assert [healthz(server.port) for _ in range(3)] == [200] * 3
        assert "unable to open" not in server.log()
        assert "Too many open files" not in server.log()
        assert any(line["why"] == "max_connections" for line in audit_lines(server))
    finally:
        close_all(held)
        server.stop()


def test_a_trusted_proxy_is_not_capped_per_address(make_server: Any) -> None:
    """A proxy in forwarded_allow_ips speaks for many clients: only the total holds for it."""
    server = make_server(max_connections_per_ip=5, forwarded_allow_ips="127.0.0.1")
    held = idle(server.port, 8)
    try:
        assert healthz(server.port) == 200
        assert healthz(server.port, source="127.0.0.2") == 200
        assert not any(closed_by_server(sock, 0.01)[0] for sock in held)
        time.sleep(0.2)  # the probes' places are given back
        more = idle(server.port, 6, source="127.0.0.2")  # not a proxy: capped
        time.sleep(0.3)
        closed, _, _ = select.select(more, [], [], 0)
        assert len(closed) == 1
        held += more
    finally:
        close_all(held)
