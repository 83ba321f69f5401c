"""A real watchroute server process, for the tests and the benchmarks: start, stop with a signal,
kill -9, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

# Several test processes start servers at once: a port found free can be taken by another's
# server before ours binds it. Ours then refuses to start (the port is in use), and the other
# answers our health checks; a server is started only once it is seen listening itself.
PORT_IN_USE = "is in use"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self, workdir: Path, database: str | None = None, port: int | None = None, **settings: object
    ) -> None:
        self.workdir = workdir
        # A port chosen by the caller (a benchmark's) is kept: one in use is an error, not a retry.
        self.fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.database = database or f"sqlite:///{workdir / 'watchroute.db'}"
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"

    @property
    def url(self) -> str:
        scheme = "https" if "tls_cert" in self.settings else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        first = self.proc is None
        for _ in range(5):
            try:
                return self._start(timeout)
            except RuntimeError as exc:
                if not (first and not self.fixed_port and PORT_IN_USE in str(exc)):
                    raise
                self.port = free_port()  # taken by another test's server meanwhile: another
        raise RuntimeError(f"no free port found: {self.log()}")

    def _start(self, timeout: float) -> ServerProcess:
        env = dict(os.environ)
        env.update({f"WATCHROUTE_{k.upper()}": str(v) for k, v in self.settings.items()})
        env.update(
            WATCHROUTE_PORT=str(self.port),
            WATCHROUTE_DATABASE=self.database,
            WATCHROUTE_LOG_LEVEL=str(self.settings.get("log_level", "warning")),
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watchroute", "serve"], env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                # A TLS test server's certificate is the test's own: only liveness is checked here.
                healthy = httpx.get(self.url + "/healthz", timeout=1, verify=False).status_code == 200
                if healthy and self._listening():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        # Not left running: a server that started late would hold its port and its CPU for as
        # long as the machine runs.
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError(f"server did not start: {self.log()}")

    def _listening(self) -> bool:
        """Whether this server (or one of its workers) is what listens on the port."""
        assert self.proc is not None
        try:
            parent = psutil.Process(self.proc.pid)
            for process in (parent, *parent.children(recursive=True)):
                for conn in process.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == self.port:
                        return True
        except psutil.Error:
            pass
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """Send `sig` and wait for the exit; returns how long it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return time.monotonic() - started

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()


# What the `module_servers` and `make_server` fixtures give: a server started with these settings.
ServerFactory = Callable[..., ServerProcess]
