"""`initial=true`: the state at one revision, sent a page at a time under flow control.

A watch that asks for the initial state gets every matching resource as it was at one revision
R, then the changes after R once each, even when writes land while the pages go out; a watch
that does not read holds about one page, not the collection; the snapshot behind the pages is
let go when the watch ends, or when it has been held for `initial_snapshot_seconds`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.metrics import scrape
from tests.support.ws import send, ws_url
from watchroute.wire.mergepatch import merge

PAD = "x" * 1000  # about 1 KB a document


def fill(url: str, collection: str, n: int, pad: str = PAD) -> int:
    """`n` documents r0000.. of about 1 KB; returns the revision after them."""
    with httpx.Client(base_url=url, timeout=60) as c:
        for start in range(0, n, 500):  # a batch under the 1 MiB body limit
            ops = [
                {
                    "op": "put",
                    "collection": collection,
                    "id": f"r{i:05d}",
                    "data": {"i": i, "k": "a" if i % 2 else "b", "pad": pad},
                }
                for i in range(start, min(n, start + 500))
            ]
            r = c.post("/v1/_batch", json={"ops": ops})
            r.raise_for_status()
        return r.json()["revision"]


def blocked_initial_watch(port: int, collection: str, params: str = "") -> socket.socket:
    """An SSE watch with initial=true whose client does not read (a small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /v1/{collection}?watch=true&initial=true&heartbeat=300{params} HTTP/1.1\r\n"
        "Host: localhost\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return sock


class SSEReader:
    """Events from a raw SSE socket, read only when asked."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        self.sock.settimeout(30)
        while not self.events:
            chunk = self.sock.recv(1 << 16)
            assert chunk, "the stream ended"
            self.buffer += chunk
            *messages, self.buffer = self.buffer.split(b"\n\n")
            for message in messages:
                for line in message.split(b"\n"):
                    if line.startswith(b"data: "):
                        self.events.append(json.loads(line[6:]))
        return self.events.pop(0)


def database_files(process: psutil.Process) -> int:
    return sum(f.path.endswith("watchroute.db") for f in process.open_files())


def watchers(url: str) -> float:
    return scrape(url)["watchroute_watchers"]


def wait_for_watchers(url: str, n: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while watchers(url) != n:
        assert time.monotonic() < deadline, f"expected {n} watchers, have {watchers(url)}"
        time.sleep(0.05)


# -- bounded memory ---------------------------------------------------------------------------

DOCS = 5_000  # about 5 MB
WATCHES = 20
# The server grew by 259 MiB here when each watch read, encoded and wrote its state whole.
RSS_BOUND = 60 * 1024 * 1024
ROUND_BOUND = 8 * 1024 * 1024


def open_blocked_watches(
    url: str, port: int, c: httpx.Client, process: psutil.Process, rss_before: int
) -> int:
    """Opens WATCHES initial watches that never read, lists while they fill their buffers, closes
    them; returns the server's largest growth meanwhile."""
    socks = [blocked_initial_watch(port, "big") for _ in range(WATCHES)]
    wait_for_watchers(url, WATCHES)
    peak = 0
    for _ in range(10):
        peak = max(peak, process.memory_info().rss - rss_before)
        started = time.monotonic()
        r = c.get("/v1/big", params={"limit": 1})
        took = time.monotonic() - started
        assert r.status_code == 200 and took < 1.0, f"a list took {took:.2f} s"
        time.sleep(0.1)
    for sock in socks:
        sock.close()
    wait_for_watchers(url, 0)
    return peak


@pytest.mark.timeout(120)
def test_initial_watches_that_never_read_hold_about_a_page_each(make_server):
    server = make_server()
    fill(server.url, "big", DOCS)
    process = psutil.Process(server.pid)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        c.get("/v1/big", params={"limit": 1}).raise_for_status()  # warm: the readers' connections
        rss_before = process.memory_info().rss
        peak = open_blocked_watches(server.url, server.port, c, process, rss_before)
        assert peak < RSS_BOUND, f"{WATCHES} watches that never read grew the server {peak / 2**20:.0f} MiB"
        # Nothing stays behind per watch: a second round finds the first one's memory free, and
        # the database files its snapshots opened (SQLite keeps them for reuse while the process
        # holds a lock on the file) are taken again, not opened anew.
        rss_after, files_after = process.memory_info().rss, database_files(process)
        open_blocked_watches(server.url, server.port, c, process, rss_before)
        time.sleep(0.2)
        grown = process.memory_info().rss - rss_after
        assert grown < ROUND_BOUND, (
            f"a second round of the same watches grew the server {grown / 2**20:.0f} MiB"
        )
        # (Give or take the store's own: a reader thread started late, a compaction pass.)
        assert database_files(process) <= files_after + 3


# -- the state at one revision, then every change after it once --------------------------------

N = 1_500  # about 1.5 MB: far more than the socket buffers take of a client that reads slowly
PAGE_BYTES = 4096  # a few documents a page: hundreds of pages
SENT_BEFORE_WRITES = 40  # initial events read before the writes start


def list_all(c: httpx.Client, collection: str) -> tuple[dict[str, dict[str, Any]], int]:
    items: dict[str, dict[str, Any]] = {}
    token, revision = None, None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"continue": token} if token else {})}
        body = c.get(f"/v1/{collection}", params=params).json()
        revision = revision or body["revision"]
        items.update({o["id"]: o for o in body["items"]})
        token = body["continue"]
        if not token:
            return items, revision


Matches = Callable[[dict[str, Any]], bool]


def write_around(c: httpx.Client, collection: str, matches: Matches) -> list[tuple[str, str, int]]:
    """Writes to resources the pages have passed and to ones they have not reached, entering and
    leaving the filter; returns the events a watch with `matches` must see, in order."""
    early, late = "r00001", f"r{N - 1:05d}"
    held = {o["id"]: o["data"] for o in (c.get(f"/v1/{collection}/{i}").json() for i in (early, late))}
    writes: list[tuple[str, dict[str, Any] | None]] = [
        (early, {**held[early], "i": -1}),  # sent already, stays in the filter
        (late, {**held[late], "i": -2}),  # not sent yet
        ("r00003", {"i": 3, "k": "b", "pad": "left"}),  # sent; leaves k=a
        (f"r{N - 4:05d}", {"i": N - 4, "k": "a", "pad": "joined"}),  # not sent; enters k=a
        ("r00005", None),  # sent, deleted
        (f"r{N - 3:05d}", None),  # not sent, deleted
        ("a0000", {"i": 0, "k": "a", "pad": "new"}),  # created before the first page's ids
        ("z9999", {"i": 0, "k": "a", "pad": "new"}),  # created after the last page's ids
        (f"r{N - 2:05d}", None),  # not sent, deleted, never in k=a
    ]
    events = []
    for id, data in writes:
        before = c.get(f"/v1/{collection}/{id}")
        prev = before.json()["data"] if before.status_code == 200 else None
        r = c.delete(f"/v1/{collection}/{id}") if data is None else c.put(f"/v1/{collection}/{id}", json=data)
        assert r.status_code in (200, 201), r.text
        was, now = prev is not None and matches(prev), data is not None and matches(data)
        kind = ("MODIFIED" if was else "ADDED") if now else ("DELETED" if was else None)
        if kind is not None:
            events.append((kind, id, r.json()["revision"]))
    return events


def check_initial_then_changes(
    c: httpx.Client,
    collection: str,
    events: list[dict[str, Any]],
    expected_state: dict[str, dict[str, Any]],
    revision: int,
    expected_changes: list[tuple[str, str, int]],
    matches: Matches,
) -> None:
    """`events`: what the watch sent, from its first event to the last expected change."""
    ends = [i for i, e in enumerate(events) if e["type"] == "BOOKMARK" and e.get("initial_events_end")]
    assert len(ends) == 1, "one end of the initial state"
    initial, live = events[: ends[0]], events[ends[0] + 1 :]
    assert events[ends[0]]["revision"] == revision, "the state's revision is the one the watch opened at"
    assert all(e["type"] == "ADDED" for e in initial)
    state = {e["object"]["id"]: e["object"] for e in initial}
    assert len(state) == len(initial), "each resource once"
    wanted = {id: o for id, o in expected_state.items() if matches(o["data"])}
    assert state == wanted, "exactly the state at the revision, whatever was written meanwhile"
    changes = [e for e in live if e["type"] != "BOOKMARK"]
    assert [(e["type"], e.get("id") or e["object"]["id"], e["revision"]) for e in changes] == expected_changes
    for e in changes:  # the client's copy, kept with the events
        id = e.get("id") or e["object"]["id"]
        if e["type"] == "DELETED":
            del state[id]
        elif "patch" in e:
            state[id] = {**state[id], "revision": e["revision"], "data": merge(state[id]["data"], e["patch"])}
        else:
            state[id] = e["object"]
    final, _ = list_all(c, collection)
    assert state == {id: o for id, o in final.items() if matches(o["data"])}, "the copy is the list"


def every(data: dict[str, Any]) -> bool:
    return True


def k_is_a(data: dict[str, Any]) -> bool:
    return data.get("k") == "a"


@pytest.fixture(scope="module")
def paged_server(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.server import ServerProcess

    proc = ServerProcess(tmp_path_factory.mktemp("initial"), initial_page_bytes=PAGE_BYTES).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.timeout(60)
def test_sse_initial_state_is_one_revision_while_writes_land(paged_server, coll):
    fill(paged_server.url, coll, N)
    with httpx.Client(base_url=paged_server.url, timeout=10) as c:
        state, revision = list_all(c, coll)
        reader = SSEReader(blocked_initial_watch(paged_server.port, coll))
        events = [reader.next() for _ in range(SENT_BEFORE_WRITES)]
        expected = write_around(c, coll, every)
        while not events or events[-1].get("revision") != expected[-1][2]:
            events.append(reader.next())
        reader.sock.close()
        check_initial_then_changes(c, coll, events, state, revision, expected, every)


async def slow_ws(url: str) -> ClientConnection:
    """A WebSocket client that takes a few messages and then lets TCP push back."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])))
    sock.setblocking(False)
    return await connect(url, sock=sock, max_queue=2)


async def ws_events(ws: ClientConnection, n: int | None, until: int | None = None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while (n is None or len(events) < n) and (
        until is None or events[-1:] == [] or events[-1].get("revision") != until
    ):
        events.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
    return events


@pytest.mark.timeout(60)
async def test_websocket_initial_state_is_one_revision_while_writes_land(paged_server, coll):
    fill(paged_server.url, coll, N)
    with httpx.Client(base_url=paged_server.url, timeout=10) as c:
        state, revision = list_all(c, coll)
        ws = await slow_ws(ws_url(paged_server, f"/v1/{coll}?initial=true"))
        async with ws:
            events = await ws_events(ws, SENT_BEFORE_WRITES)
            expected = await asyncio.to_thread(write_around, c, coll, every)
            events += await ws_events(ws, None, until=expected[-1][2])
        check_initial_then_changes(c, coll, events, state, revision, expected, every)


@pytest.mark.timeout(60)
async def test_multiplexed_filtered_patch_initial_state_is_one_revision(paged_server, coll):
    # The filter's membership and format=patch, on a /v1/_watch subscription. Half the
    # documents match: twice as large, so that the matching half still fills the buffers.
    fill(paged_server.url, coll, N, pad=PAD * 2)
    with httpx.Client(base_url=paged_server.url, timeout=10) as c:
        state, revision = list_all(c, coll)
        ws = await slow_ws(ws_url(paged_server, "/v1/_watch"))
        async with ws:
            await send(
                ws,
                {
                    "op": "subscribe",
                    "sub": "s",
                    "collection": coll,
                    "initial": True,
                    "filter": "k=a",
                    "format": "patch",
                },
            )
            subscribed = orjson.loads(await ws.recv())
            assert subscribed["type"] == "SUBSCRIBED" and subscribed["revision"] == revision
            events = await ws_events(ws, SENT_BEFORE_WRITES)
            expected = await asyncio.to_thread(write_around, c, coll, k_is_a)
            events += await ws_events(ws, None, until=expected[-1][2])
        assert all(e.pop("sub") == "s" for e in events)
        assert any("patch" in e for e in events), "the live MODIFIED went as a patch"
        check_initial_then_changes(c, coll, events, state, revision, expected, k_is_a)


@pytest.mark.timeout(60)
def test_longpoll_initial_state_spans_many_pages(paged_server, coll):
    fill(paged_server.url, coll, 300, pad="y" * 200)
    with httpx.Client(base_url=paged_server.url, timeout=10) as c:
        state, revision = list_all(c, coll)
        body = c.get(f"/v1/{coll}", params={"watch": "longpoll", "initial": "true", "filter": "k=a"}).json()
    *added, end = body["events"]
    assert end == {"type": "BOOKMARK", "revision": revision, "initial_events_end": True}
    assert body["revision"] == revision
    assert {e["object"]["id"]: e["object"] for e in added} == {
        i: o for i, o in state.items() if k_is_a(o["data"])
    }


def checkpoint(server: Any) -> int:
    """Try to copy the whole WAL into the database; 1 when a reader's snapshot stands in the way."""
    import sqlite3

    conn = sqlite3.connect(server.database.removeprefix("sqlite:///"), timeout=0)
    try:
        return conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_a_snapshot_held_too_long_is_let_go_and_the_watch_gets_410(make_server):
    server = make_server(initial_snapshot_seconds=1)
    fill(server.url, "big", DOCS)  # more than the socket buffers take
    with httpx.Client(base_url=server.url, timeout=10) as c:
        reader = SSEReader(blocked_initial_watch(server.port, "big"))
        wait_for_watchers(server.url, 1)
        c.put("/v1/big/late", json={"i": 1}).raise_for_status()
        assert checkpoint(server) == 1, "the watch's snapshot holds the WAL"
        time.sleep(1.5)
        assert checkpoint(server) == 0, "the snapshot was let go, though the watch is still stuck"
        events = [reader.next()]
        while events[-1]["type"] == "ADDED":
            events.append(reader.next())
        reader.sock.close()
    *added, error = events
    assert 0 < len(added) < DOCS
    assert (
        error["type"] == "ERROR" and error["error"]["status"] == 410 and error["error"]["reason"] == "Expired"
    )
    assert scrape(server.url, phase="initial")["watchroute_expired_total"] == 1
    assert scrape(server.url, why="initial_too_slow")["watchroute_slow_watchers_ended_total"] == 1


@pytest.mark.timeout(60)
def test_a_rule_and_a_filter_hold_on_every_page(make_server):
    from tests.support.security_keys import AUDIENCE, SECRET, hs_token

    server = make_server(
        auth="jwt",
        jwt_secret=SECRET,
        jwt_audience=AUDIENCE,
        rules=json.dumps({"notes": "owner=$sub"}),
        initial_page_bytes=1024,
    )
    admin = {"Authorization": f"Bearer {hs_token(sub='admin', scope='read:* write:* watch:* bypass:*')}"}
    alice = {"Authorization": f"Bearer {hs_token(sub='alice', scope='read:* watch:*')}"}
    with httpx.Client(base_url=server.url, timeout=10) as c:
        ops = [
            {
                "op": "put",
                "collection": "notes",
                "id": f"n{i:04d}",
                "data": {
                    "owner": ("alice", "bob", "carol")[i % 3],
                    "k": "a" if i % 2 else "b",
                    "pad": "z" * 300,
                },
            }
            for i in range(600)
        ]
        c.post("/v1/_batch", json={"ops": ops}, headers=admin).raise_for_status()
        theirs = {
            o["id"]: o
            for o in c.get("/v1/notes", params={"limit": 1000, "filter": "k=a"}, headers=alice).json()[
                "items"
            ]
        }
        body = c.get(
            "/v1/notes",
            params={"watch": "longpoll", "initial": "true", "filter": "k=a"},
            headers=alice,
        ).json()
        *added, end = body["events"]
        assert end["initial_events_end"] is True
        assert {e["object"]["id"]: e["object"] for e in added} == theirs
        assert len(theirs) == 100 and all(o["data"]["owner"] == "alice" for o in theirs.values())
        with c.stream(
            "GET", "/v1/notes", params={"watch": "true", "initial": "true", "filter": "k=a"}, headers=alice
        ) as stream:
            seen = []
            for line in stream.iter_lines():
                if line:
                    seen.append(json.loads(line))
                    if seen[-1]["type"] == "BOOKMARK":
                        break
        assert seen == body["events"], "NDJSON sends what long-poll answers"


@pytest.mark.timeout(60)
def test_initial_states_sent_at_once_are_capped_and_their_places_come_back(make_server):
    # Each holds a database connection until its state has gone out: watches that never read
    # must not take every file descriptor the store keeps for itself.
    server = make_server(max_initial_states=2)
    fill(server.url, "big", DOCS)  # more than the socket buffers take: the two stay stuck
    socks = [blocked_initial_watch(server.port, "big") for _ in range(2)]
    wait_for_watchers(server.url, 2)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        started = time.monotonic()
        r = c.get("/v1/big", params={"watch": "true", "initial": "true", "timeout": 1})
        waited = time.monotonic() - started
        assert r.status_code == 503 and r.json()["reason"] == "TooManyInitialStates", r.text
        assert r.headers["retry-after"] == "1" and waited >= 4, "it waited for a place first"
        assert c.get("/v1/big", params={"watch": "true", "timeout": 0.2}).status_code == 200, "others go on"
        socks.pop().close()  # its place comes back with it
        body = c.get("/v1/big", params={"watch": "longpoll", "initial": "true"}).json()
        assert len(body["events"]) == DOCS + 1 and body["events"][-1]["initial_events_end"] is True
    socks.pop().close()
