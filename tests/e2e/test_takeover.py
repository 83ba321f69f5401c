"""Streaming watches written straight to their connections, read at the HTTP/1.1 level."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import h11
import httpx


def open_stream(server, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n".encode("latin-1")
    )
    return sock


def read_response(sock: socket.socket) -> tuple[h11.Response, list[bytes], bool]:
    """Parse a whole response strictly: the head, every chunk, whether the body ended properly."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "test")]))
    conn.send(h11.EndOfMessage())
    head, chunks, ended = None, [], False
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            conn.receive_data(data)
            if not data:
                break
            continue
        if isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            ended = True
            break
        else:  # the connection closed before the body ended
            break
    assert head is not None
    return head, chunks, ended


def sse_events(body: bytes) -> list[dict]:
    return [json.loads(line[len(b"data: ") :]) for line in body.split(b"\n") if line.startswith(b"data: ")]


def test_a_stream_is_a_well_formed_chunked_response_that_ends_cleanly(server, client):
    sock = open_stream(server, "/v1/t?watch=true&timeout=2")
    time.sleep(0.3)
    revisions = [client.put(f"/v1/t/{i}", json={"i": i}).json()["revision"] for i in range(20)]
    head, chunks, ended = read_response(sock)
    sock.close()
    assert head.status_code == 200
    assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
    assert ended, "the body must end with the last chunk, not a cut connection"
    changes = [e for e in sse_events(b"".join(chunks)) if e["type"] != "BOOKMARK"]
    assert [e["revision"] for e in changes] == revisions


def test_clients_that_vanish_mid_stream_do_not_disturb_the_others(server, client):
    stayers = [open_stream(server, "/v1/v?watch=true&timeout=3") for _ in range(10)]
    leavers = [open_stream(server, "/v1/v?watch=true") for _ in range(30)]
    time.sleep(0.5)
    revisions: list[int] = []

    def write(n: int) -> None:
        with httpx.Client(base_url=server.url) as c:
            revisions.extend(c.put(f"/v1/v/{i}", json={"i": i}).json()["revision"] for i in range(n))

    writer = threading.Thread(target=write, args=(200,))
    writer.start()
    for sock in leavers:
        # A reset, not a polite close: the server finds out in the middle of its writes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        time.sleep(0.005)
    writer.join()
    for sock in stayers:
        _, chunks, ended = read_response(sock)
        sock.close()
        assert ended
        changes = [e for e in sse_events(b"".join(chunks)) if e["type"] != "BOOKMARK"]
        assert [e["revision"] for e in changes] == revisions
    assert client.get("/healthz").status_code == 200


def test_a_pooling_client_can_go_on_after_a_stream_ends(server):
    # The stream's connection ends with it; the response says so, so that a client that pools
    # connections opens a new one for its next request instead of failing on the old one.
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for _ in range(3):
            r = c.get("/v1/p?watch=true&timeout=0.5", headers={"Accept": "text/event-stream"})
            assert r.status_code == 200 and r.content.startswith(b"retry: ")
            assert r.headers["connection"] == "close"
            assert c.put("/v1/p/a", json={"n": 1}).status_code in (200, 201)
