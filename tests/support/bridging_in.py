"""What the inbound bridge tests share: brokers of their own, a bridge set up and awaited, and the
log of a collection read back whole."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import free_port


def wait_for(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05, what: str = "") -> Any:
    """`check()`'s first true answer; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(every)


def unique(prefix: str) -> str:
    """A name no other test (nor an earlier run against the same broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def put_bridge(client: httpx.Client, name: str, **config: Any) -> None:
    r = client.put(f"/v1/_bridges/{name}", json={"direction": "in", **config})
    assert r.status_code in (200, 201), r.text


def status(client: httpx.Client, name: str) -> dict[str, Any]:
    r = client.get(f"/v1/_bridges/{name}")
    assert r.status_code == 200, r.text
    return r.json()["status"]


def wait_running(client: httpx.Client, name: str, timeout: float = 30.0) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        try:
            shown = status(client, name)
        except httpx.HTTPError:
            return None
        return shown if shown["state"] == "running" else None

    return wait_for(running, timeout, 0.1, f"bridge {name} running")


def log_of(client: httpx.Client, collection: str) -> list[dict[str, Any]]:
    """Every change of `collection` in the log, in revision order (long-polls from 0)."""
    events: list[dict[str, Any]] = []
    since = 0
    while True:
        r = client.get(f"/v1/{collection}", params={"watch": "longpoll", "since": since, "timeout": 0.05})
        assert r.status_code == 200, r.text
        body = r.json()
        if not body["events"]:
            return events
        events.extend(body["events"])
        since = body["revision"]


def items_of(client: httpx.Client, collection: str) -> dict[str, dict[str, Any]]:
    """The collection's documents by id, every page of them."""
    items: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"limit": 1000}
    while True:
        r = client.get(f"/v1/{collection}", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        items.update((item["id"], item["data"]) for item in body["items"])
        if not body.get("continue"):
            return items
        params["continue"] = body["continue"]


CHANGES = ("ADDED", "MODIFIED", "DELETED")


def writes_by_id(events: list[dict[str, Any]]) -> Counter[str]:
    """How many revisions the log holds of each resource."""
    return Counter(event["object"]["id"] for event in events if event["type"] in CHANGES)


class BrokerProcess:
    """A broker of the test's own, on a free port, with its data in `workdir`: stopped, killed
    and started again without disturbing the machine's shared one."""

    name = "broker"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> BrokerProcess:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.workdir)
        wait_for(self._listening, 20, 0.05, f"{self.name} on {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.workdir / f"{self.name}.log").read_text()
            raise RuntimeError(f"{self.name} exited: {log[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()


class NatsServer(BrokerProcess):
    name = "nats-server"

    def command(self) -> list[str]:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        return [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.workdir / "js")]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class Mosquitto(BrokerProcess):
    """Persistence on, so that sessions and their queued messages outlive a restart."""

    name = "mosquitto"

    def command(self) -> list[str]:
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            # `user root`: started as root, it would write its database as `mosquitto`, which
            # may not enter the test's directory (as any other user, the line is ignored).
            f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.workdir}/\nautosave_interval 1\nmax_queued_messages 100000\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return [binary, "-c", str(config)]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class RedisServer(BrokerProcess):
    """Every write to the append-only file synced, so that a restart keeps the stream."""

    name = "redis-server"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        return [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(self.workdir),
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"
