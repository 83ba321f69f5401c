"""Brokers of a test's own: nats-server (JetStream), mosquitto and redis-server on free ports
with their data in a directory of the test's, so that a test may stop, kill and restart its
broker without disturbing the brokers the machine shares."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Self

from tests.support.bridging import wait_for
from tests.support.server import free_port


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

    def start(self, timeout: float = 20.0) -> Self:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.workdir)
        wait_for(self._listening, timeout, 0.05, f"{self.name} on {self.port}")
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

    def restart(self) -> Self:
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
    """`durable`: every write to the append-only file synced, so that a restart keeps the
    streams; otherwise it keeps nothing on disk, and a restart starts empty."""

    name = "redis-server"

    def __init__(self, workdir: Path, durable: bool = True) -> None:
        super().__init__(workdir)
        self.durable = durable

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
            *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]),
            "--dir",
            str(self.workdir),
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"
