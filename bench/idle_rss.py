"""Server memory per idle watcher: N idle SSE watches, N idle WebSocket watches (an upgraded
watch URL each), and N subscriptions multiplexed on a few `/v1/_watch` sockets.

For each kind a fresh server is started (loopback, SQLite in a temporary directory), warmed up,
and its RSS read once it is quiet; then N watchers are opened and left idle, RSS is read again
once it is quiet, and one write proves every watcher is live (each must receive it). The figure
is (RSS with N open - RSS before) / N. The open-file limit is raised for this process and the
servers it starts.

    .venv/bin/python bench/idle_rss.py            # 5000 of each
    .venv/bin/python bench/idle_rss.py -n 1000 --kinds sse,ws
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import psutil
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.server import ServerProcess, free_port  # noqa: F401 - free_port: for postgres_cluster.py

HEARTBEAT = 300  # idle: no heartbeats while measuring
SUBSCRIPTIONS_PER_SOCKET = 500


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    """A fresh watchroute for the idle figures, started as the tests start one."""

    def __init__(self, workdir: Path) -> None:
        self.launcher = ServerProcess(
            workdir,
            database=f"sqlite:///{workdir / 'idle.db'}",
            ws_idle_timeout=0,
            max_connections_per_ip=0,  # every watcher comes from this one address
        ).start()
        self.port, self.url = self.launcher.port, self.launcher.url
        self.process = psutil.Process(self.launcher.pid)

    def rss(self) -> int:
        return self.process.memory_info().rss

    async def quiet_rss(self) -> int:
        """RSS once the server has stopped working (under 2% of a core over 0.5 s)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            before = sum(self.process.cpu_times()[:2])
            await asyncio.sleep(0.5)
            if sum(self.process.cpu_times()[:2]) - before < 0.01:
                break
        return self.rss()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):  # killed once the wait ran out
            self.launcher.stop(timeout=15)


# -- idle SSE watches: bare protocols, so that the generator costs little -----------------------


class SSEWatch(asyncio.Protocol):
    def __init__(self) -> None:
        self.started = asyncio.get_running_loop().create_future()
        self.got_event = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.started.done() and data.startswith(b"HTTP/1.1 200"):
            self.started.set_result(None)
        if b'"type":"ADDED"' in data and not self.got_event.done():
            self.got_event.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.started, self.got_event):
            future.cancel()  # a no-op once done; a waiter of an open one learns it closed


async def open_sse(server: Server, n: int) -> list[SSEWatch]:
    loop = asyncio.get_running_loop()
    request = (
        f"GET /v1/idle?watch=true&heartbeat={HEARTBEAT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()

    async def one() -> SSEWatch:
        _, watch = await loop.create_connection(SSEWatch, "127.0.0.1", server.port)
        assert watch.transport is not None
        watch.transport.write(request)
        await watch.started
        return watch

    watches: list[SSEWatch] = []
    for start in range(0, n, 500):
        watches += await asyncio.gather(*(one() for _ in range(min(500, n - start))))
    return watches


async def sse_all_receive(watches: list[SSEWatch]) -> None:
    await asyncio.gather(*(w.got_event for w in watches))


def close_sse(watches: list[SSEWatch]) -> None:
    for w in watches:
        if w.transport is not None:
            w.transport.close()


# -- idle WebSocket watches ---------------------------------------------------------------------


async def open_ws(server: Server, n: int) -> list[ClientConnection]:
    url = f"ws://127.0.0.1:{server.port}/v1/idle?heartbeat={HEARTBEAT}"

    async def one() -> ClientConnection:
        # The client library answers the server's pings; it sends none of its own.
        return await connect(url, ping_interval=None, compression=None, open_timeout=60)

    sockets: list[ClientConnection] = []
    for start in range(0, n, 500):
        sockets += await asyncio.gather(*(one() for _ in range(min(500, n - start))))
    return sockets


async def ws_all_receive(sockets: list[ClientConnection]) -> None:
    async def one(ws: ClientConnection) -> None:
        while orjson.loads(await ws.recv())["type"] != "ADDED":
            pass

    await asyncio.gather(*(one(ws) for ws in sockets))


async def open_multiplexed(server: Server, n: int) -> list[ClientConnection]:
    url = f"ws://127.0.0.1:{server.port}/v1/_watch"
    sockets = []
    for start in range(0, n, SUBSCRIPTIONS_PER_SOCKET):
        ws = await connect(url, ping_interval=None, compression=None, max_size=None)
        count = min(SUBSCRIPTIONS_PER_SOCKET, n - start)
        for i in range(count):
            sub = {"op": "subscribe", "sub": f"s{i}", "collection": "idle", "heartbeat": HEARTBEAT}
            await ws.send(orjson.dumps(sub).decode())
        for _ in range(count):
            assert orjson.loads(await ws.recv())["type"] == "SUBSCRIBED"
        sockets.append(ws)
    return sockets


async def multiplexed_all_receive(sockets: list[ClientConnection], n: int) -> None:
    async def one(ws: ClientConnection, expected: int) -> None:
        got = 0
        while got < expected:
            got += orjson.loads(await ws.recv())["type"] == "ADDED"

    counts = [min(SUBSCRIPTIONS_PER_SOCKET, n - i * SUBSCRIPTIONS_PER_SOCKET) for i in range(len(sockets))]
    await asyncio.gather(*(one(ws, c) for ws, c in zip(sockets, counts, strict=True)))


async def close_ws(sockets: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# -- one measurement ----------------------------------------------------------------------------


async def measure(kind: str, n: int, workdir: Path) -> dict[str, float]:
    server = Server(workdir)
    try:
        # Warm-up: the code paths and allocator pools a first watcher brings in are not per-watcher.
        if kind == "sse":
            close_sse(await open_sse(server, 50))
        elif kind == "ws":
            await close_ws(await open_ws(server, 50))
        else:
            await close_ws(await open_multiplexed(server, 50))
        httpx.put(server.url + "/v1/idle/warm", json={})
        base = await server.quiet_rss()

        started = time.monotonic()
        if kind == "sse":
            sse = await open_sse(server, n)
        elif kind == "ws":
            ws = await open_ws(server, n)
        else:
            ws = await open_multiplexed(server, n)
        opened_s = time.monotonic() - started
        loaded = await server.quiet_rss()

        # Every watcher is live: one write reaches all of them.
        started = time.monotonic()
        httpx.put(server.url + "/v1/idle/probe", json={"probe": True})
        if kind == "sse":
            await asyncio.wait_for(sse_all_receive(sse), 60)
            close_sse(sse)
        elif kind == "ws":
            await asyncio.wait_for(ws_all_receive(ws), 60)
            await close_ws(ws)
        else:
            await asyncio.wait_for(multiplexed_all_receive(ws, n), 60)
            await close_ws(ws)
        fanout_s = time.monotonic() - started
    finally:
        server.stop()
    return {
        "watchers": n,
        "rss_before_mb": base / 2**20,
        "rss_open_mb": loaded / 2**20,
        "kb_per_watcher": (loaded - base) / n / 1024,
        "open_s": opened_s,
        "one_write_to_all_s": fanout_s,
    }


LABELS = {
    "sse": "idle SSE watch (one HTTP response each)",
    "ws": "idle WebSocket watch (one upgraded watch URL each)",
    "mux": f"/v1/_watch subscription ({SUBSCRIPTIONS_PER_SOCKET} per socket)",
}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=5000, help="watchers of each kind (5000)")
    parser.add_argument("--kinds", default="sse,ws,mux", help="sse,ws,mux")
    args = parser.parse_args()
    limit = raise_nofile(2 * args.n + 1024)
    if limit < args.n + 256:
        sys.exit(f"the open-file limit is {limit}: too low for {args.n} watchers")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, open-file limit {limit}")
    print("| watcher | N | server RSS before | with N open | per watcher | open all | one write to all |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="watchroute-idle-") as tmp:
        for kind in args.kinds.split(","):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            r = await measure(kind, args.n, workdir)
            print(
                f"| {LABELS[kind]} | {r['watchers']} | {r['rss_before_mb']:.1f} MiB | "
                f"{r['rss_open_mb']:.1f} MiB | **{r['kb_per_watcher']:.1f} KiB** | {r['open_s']:.1f} s | "
                f"{r['one_write_to_all_s']:.2f} s |",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
