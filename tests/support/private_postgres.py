"""A PostgreSQL cluster of a test's own (initdb in a temporary folder, its own port), which the
test may restart or crash at will: the machine's shared server must not be restarted while
other suites use it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    bin: str
    data: str
    port: int
    user: str | None  # whom to run the server as (PostgreSQL refuses root)
    settings: str = ""  # more ` -c name=value` for the server

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [f"{self.bin}/{args[0]}", *args[1:]]
        if self.user is not None:
            command = ["su", self.user, "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in command)]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def pg_ctl(self, action: str, mode: str = "fast") -> None:
        options = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c wal_level=logical -c fsync=off"
            + self.settings
        )
        self._run(
            "pg_ctl", "-D", self.data, "-o", options, "-m", mode, "-w", "-l", f"{self.data}/log", action
        )


@contextmanager
def private_postgres(settings: str = "") -> Iterator[Cluster]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run a private cluster as")
        user = "postgres"
    folder = tempfile.mkdtemp(prefix="watchroute-pg-")
    if user is not None:
        shutil.chown(folder, user)
    cluster = Cluster(os.path.dirname(found[-1]), f"{folder}/data", _free_port(), user, settings)
    try:
        cluster._run("initdb", "-D", cluster.data, "-A", "trust", "-U", "postgres", "--no-sync")
        cluster.pg_ctl("start")
        yield cluster
    finally:
        with suppress(Exception):
            cluster.pg_ctl("stop", "immediate")
        shutil.rmtree(folder, ignore_errors=True)


def wait_until_up(url: str, timeout: float = 20.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=1).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
