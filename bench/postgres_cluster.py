"""What the PostgreSQL rows run on: databases of their own, watchroute instances on free
ports, nginx in front of them, and PostgreSQL's own CPU (bench/postgres.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import idle_rss
import psutil

REPO = Path(__file__).resolve().parent.parent


def _admin(admin_url: str):
    import psycopg  # the PostgreSQL extra: only these rows need it

    return psycopg.connect(admin_url, autocommit=True, connect_timeout=3)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = "watchroute_bench_" + uuid.uuid4().hex[:12]
    with _admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rpartition("/")[0] + "/" + name
    finally:
        with _admin(admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connections(admin_url: str, url: str) -> int:
    with _admin(admin_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (url.rpartition("/")[2],)
        ).fetchone()
    return int(row[0]) if row else 0


class PostgresCpu:
    """CPU seconds PostgreSQL spends for one database: its backends and the server's background
    processes (WAL writer, checkpointer, ...), not the backends of other databases. Sampled
    every 0.2 s: a backend that exits takes its CPU times with it, so each one's last sample
    is kept."""

    def __init__(self, database_url: str) -> None:
        self.name = database_url.rpartition("/")[2]
        import psycopg

        # Only this server's processes (the machine may run other PostgreSQL servers): the
        # parent of a backend, asked while the backend still lives.
        with psycopg.connect(database_url, connect_timeout=3) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            self.postmaster = psutil.Process(psutil.Process(backend).ppid())
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stopped = threading.Event()
        self.sample(first=True)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def ours(self, cmdline: str) -> bool:
        # A client backend reads "postgres: <cluster>: <user> <database> <address> <state>".
        return f" {self.name} " in cmdline or "(" not in cmdline

    def sample(self, first: bool = False) -> None:
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = self.postmaster.children()
        for p in children:
            with contextlib.suppress(psutil.Error):
                if not self.ours(" ".join(p.cmdline()) + " "):
                    continue
                t = p.cpu_times()
                self.last[p.pid] = t.user + t.system
                if first:
                    self.first[p.pid] = self.last[p.pid]

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.sample()

    def seconds(self) -> float:
        """CPU seconds since it was made; it goes on sampling."""
        self.sample()
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


class Instance:
    """One `watchroute serve` process on a free port, in its own process group."""

    def __init__(self, database: str, workdir: Path, name: str) -> None:
        self.database, self.workdir, self.name = database, workdir, name
        self.port = idle_rss.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Instance:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, WATCHROUTE_WS_IDLE_TIMEOUT="0")
        command = [
            str(REPO / ".venv" / "bin" / "watchroute"),
            "serve",
            "--port",
            str(self.port),
            "--database",
            self.database,
            "--log-level",
            "warning",
            # every simulated client comes from this one address
            "--max-connections-per-ip",
            "0",
        ]
        with open(self.workdir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after 30 s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def instances(database: str, workdir: Path, n: int) -> Iterator[list[Instance]]:
    started: list[Instance] = []
    try:
        for i in range(n):
            started.append(Instance(database, workdir, f"i{i}").start())
        yield started
    finally:
        for inst in started:
            inst.stop()


def nginx_in_front(urls: list[str], workdir: Path) -> tuple[subprocess.Popen, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
    port = idle_rss.free_port()
    config = (REPO / "deploy" / "nginx.conf").read_text().replace("listen 8000;", f"listen 127.0.0.1:{port};")
    for n, url in enumerate(urls):
        config = config.replace(f"127.0.0.1:800{n + 1} ", url.removeprefix("http://") + " ")
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(config)
    with open(prefix / "error.log", "ab") as log:
        proc = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"], stderr=log
        )
    return proc, f"http://127.0.0.1:{port}"
