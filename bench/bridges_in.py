"""Bridges in: messages/s from MQTT and from NATS JetStream into a watched collection.

A watchroute server (SQLite) with an inbound bridge per broker, each broker a process of the
benchmark's own on a free port (mosquitto, nats-server -js), and a watcher (NDJSON) on each bridge's
collection. N messages, each to its own resource, are published as fast as the broker takes them
(JetStream: acknowledged publishes, a window of them in flight; MQTT: QoS 1, likewise); the
figure is N over the time from the first publish to the watcher's N-th event. The broker, the
publisher, the server and the watcher share the machine's cores.

    .venv/bin/python bench/bridges_in.py --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

IN_FLIGHT = 256
seen_by = [0]  # publishes awaiting the broker's acknowledgement at once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def start(args: list[str], port: int, workdir: Path, name: str) -> subprocess.Popen[bytes]:
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=workdir)
    wait_listening(port, proc)
    return proc


def watch_count(url: str, collection: str, expected: int, ready: threading.Event, done: list[float]) -> None:
    """Counts the changes a watcher of `collection` (NDJSON) gets; records when the last arrives."""
    seen = 0
    seen_by[0] = 0
    with (
        httpx.Client(timeout=None) as client,
        client.stream("GET", f"{url}/v1/{collection}", params={"watch": "true"}) as response,
    ):
        ready.set()
        for line in response.iter_lines():
            if line and '"BOOKMARK"' not in line:
                seen += 1
                seen_by[0] = seen
                if seen == expected:
                    done.append(time.perf_counter())
                    return


def put_bridge(url: str, name: str, config: dict[str, Any]) -> None:
    body = {"direction": "in", "id": "topic:1", **config}  # each message's resource: its last segment
    r = httpx.put(f"{url}/v1/_bridges/{name}", json=body, timeout=10)
    r.raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = httpx.get(f"{url}/v1/_bridges/{name}", timeout=10).json()["status"]
        if shown["state"] == "running":
            return
        time.sleep(0.1)
    raise SystemExit(f"bridge {name} did not start: {shown}")


async def make_stream(broker: str, subject: str) -> None:
    import nats

    nc = await nats.connect(broker)
    await nc.jetstream().add_stream(name=subject.upper(), subjects=[f"{subject}.>"])
    await nc.close()


async def publish_nats(broker: str, subject: str, n: int) -> None:
    import nats

    nc = await nats.connect(broker)
    js = nc.jetstream()
    window = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with window:
            await js.publish(f"{subject}.m{i}", b'{"n": %d}' % i)

    await asyncio.gather(*(one(i) for i in range(n)))
    await nc.close()


async def publish_mqtt(port: int, topic: str, n: int) -> None:
    import aiomqtt

    window = asyncio.Semaphore(IN_FLIGHT)
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=IN_FLIGHT) as client:
        client.pending_calls_threshold = 2 * IN_FLIGHT  # the window is ours: no warning for it

        async def one(i: int) -> None:
            async with window:
                await client.publish(f"{topic}/m{i}", b'{"n": %d}' % i, qos=1)

        await asyncio.gather(*(one(i) for i in range(n)))


def measure(url: str, collection: str, n: int, publish: Any) -> dict[str, Any]:
    ready = threading.Event()
    done: list[float] = []
    watcher = threading.Thread(target=watch_count, args=(url, collection, n, ready, done), daemon=True)
    watcher.start()
    ready.wait(10)
    time.sleep(0.2)
    started = time.perf_counter()
    asyncio.run(publish())
    published = time.perf_counter() - started
    watcher.join(120)
    if not done:
        raise SystemExit(f"the watcher of {collection} did not see {n} changes ({seen_by[0]} seen)")
    seconds = done[0] - started
    return {
        "messages": n,
        "seconds": round(seconds, 3),
        "messages_per_second": round(n / seconds),
        "publish_seconds": round(published, 3),
    }


def run(n: int) -> dict[str, Any]:
    nats_binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    mosquitto_binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="bridges-in-") as tmp:
        workdir = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            nats_port, mqtt_port, port = free_port(), free_port(), free_port()
            procs.append(
                start(
                    [nats_binary, "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(workdir / "js")],
                    nats_port,
                    workdir,
                    "nats",
                )
            )
            config = workdir / "mosquitto.conf"
            config.write_text(
                f"user root\nlistener {mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            )
            procs.append(start([mosquitto_binary, "-c", str(config)], mqtt_port, workdir, "mosquitto"))
            env = dict(
                os.environ,
                WATCHROUTE_PORT=str(port),
                WATCHROUTE_DATABASE=f"sqlite:///{workdir / 'watchroute.db'}",
                WATCHROUTE_LOG_LEVEL="warning",
            )
            log = open(workdir / "server.log", "ab")  # noqa: SIM115 - owned by the process
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "watchroute", "serve"], env=env, stdout=log, stderr=log
                )
            )
            wait_listening(port, procs[-1], 60)
            url = f"http://127.0.0.1:{port}"
            tag = uuid.uuid4().hex[:6]
            subject, topic = f"js{tag}", f"mq{tag}"
            nats_url, mqtt_url = f"nats://127.0.0.1:{nats_port}", f"mqtt://127.0.0.1:{mqtt_port}"
            asyncio.run(make_stream(nats_url, subject))  # the stream is there before its bridge
            by_segment = {"id": "topic:1"}
            put_bridge(
                url,
                "bench-nats",
                {"url": nats_url, "topic": f"{subject}.>", "collection": subject, **by_segment},
            )
            put_bridge(
                url, "bench-mqtt", {"url": mqtt_url, "topic": f"{topic}/+", "collection": topic, **by_segment}
            )

            return {
                "jetstream": measure(url, subject, n, lambda: publish_nats(nats_url, subject, n)),
                "mqtt": measure(url, topic, n, lambda: publish_mqtt(mqtt_port, topic, n)),
                "cpus": os.cpu_count(),
            }
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="messages published per broker")
    args = parser.parse_args()
    print(json.dumps(run(args.messages), indent=2))


if __name__ == "__main__":
    main()
