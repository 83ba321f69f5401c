"""Brokers of a test's own: nats-server (JetStream), redis-server and mosquitto on free ports
with temporary directories, so that a test may stop and restart its broker without disturbing
the brokers the machine shares."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.server import free_port


class BrokerProcess:
    def __init__(self, workdir: Path, argv: Callable[[int], list[str]], scheme: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._argv = argv
        self.scheme = scheme
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> BrokerProcess:
        log = open(self.workdir / "broker.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self._argv(self.port), stdout=log, stderr=log, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {(self.workdir / 'broker.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not start on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()


def nats_broker(workdir: Path) -> BrokerProcess:
    store = workdir / "jetstream"
    return BrokerProcess(
        workdir,
        lambda port: ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        "nats",
    )


def redis_broker(workdir: Path) -> BrokerProcess:
    return BrokerProcess(
        workdir,
        lambda port: [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        "redis",
    )


def mosquitto_broker(workdir: Path) -> BrokerProcess:
    def argv(port: int) -> list[str]:
        conf = workdir / "mosquitto.conf"
        # Persistent: a subscriber's session (and the QoS 1 messages queued for it) outlives a
        # restart of the broker, so a test can tell what the bridge published across one, even
        # what it published before the subscriber was back. `user root`: started as root, the
        # broker would drop to `mosquitto`, which may not enter the test's directory, and fail to
        # save its database (the session lost); as any other user, the line is ignored.
        conf.write_text(
            f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\n"
        )
        return ["mosquitto", "-c", str(conf)]

    return BrokerProcess(workdir, argv, "mqtt")
