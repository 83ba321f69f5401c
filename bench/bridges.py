"""Bridges benchmark: changes/s out to NATS JetStream.

A watchroute server (SQLite) with an OUT bridge to a JetStream subject; --changes writes are
made in _batch requests of --batch, and the time is taken from the first write's send until the
stream holds them all (each published with its revision as Nats-Msg-Id and acknowledged one at
a time). A nats-server of its own runs on a free port with a temporary directory. Prints JSON.

    .venv/bin/python bench/bridges.py --changes 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def _stream_count(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        except nats.js.errors.NotFoundError:
            return 0
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wr-bench-bridges-"))
    nats_port, port = _free_port(), _free_port()
    broker = subprocess.Popen(
        ["nats-server", "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(work / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "WATCHROUTE_PORT": str(port),
        "WATCHROUTE_DATABASE": f"sqlite:///{work / 'bench.db'}",
        "WATCHROUTE_LOG_LEVEL": "warning",
    }
    server = subprocess.Popen([sys.executable, "-m", "watchroute", "serve"], env=env)
    nats_url = f"nats://127.0.0.1:{nats_port}"
    try:
        _wait_port(nats_port)
        _wait_port(port)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            r = client.put(
                "/v1/_bridges/bench",
                json={
                    "direction": "out",
                    "url": nats_url,
                    "collection": "items",
                    "subject": "bench.items",
                    "stream": "BENCH",
                },
            )
            r.raise_for_status()
            started = time.monotonic()
            for at in range(0, args.changes, args.batch):
                ops = [
                    {"op": "put", "collection": "items", "id": f"i{n}", "data": {"n": n, "pad": "x" * 64}}
                    for n in range(at, min(at + args.batch, args.changes))
                ]
                client.post("/v1/_batch", json={"ops": ops}).raise_for_status()
            written = time.monotonic() - started
            while asyncio.run(_stream_count(nats_url, "BENCH")) < args.changes:
                time.sleep(0.05)
            elapsed = time.monotonic() - started
        print(
            json.dumps(
                {
                    "benchmark": "bridge_out_jetstream",
                    "changes": args.changes,
                    "write_seconds": round(written, 2),
                    "seconds_until_all_in_stream": round(elapsed, 2),
                    "changes_per_second": round(args.changes / elapsed),
                }
            )
        )
    finally:
        server.terminate()
        server.wait(30)
        broker.terminate()
        broker.wait(30)


if __name__ == "__main__":
    main()
