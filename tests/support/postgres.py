"""Databases of the tests' own on the machine's PostgreSQL: each created fresh, dropped after."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.server import free_port

# The server the tests use, and a database on it to connect to while creating theirs.
ADMIN_URL = os.environ.get("WATCHROUTE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# Where Debian keeps each PostgreSQL version's server programs (initdb, pg_ctl).
BINARIES = Path("/usr/lib/postgresql")


def _admin():  # psycopg imported here: only the PostgreSQL tests need it
    import psycopg

    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL cannot be reached at {ADMIN_URL}: {exc}")


def url_of(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with whatever is still connected) after."""
    name = "watchroute_test_" + uuid.uuid4().hex[:12]
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_of(name)
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_connections_allowed(url: str, allowed: bool) -> None:
    """Cut a test database off (or let it back): new connections are refused and, when cut
    off, the open ones are ended: to its users the database is gone, while the server goes on
    serving everyone else's."""
    name = url.rpartition("/")[2]
    with _admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


class PrivateCluster:
    """A PostgreSQL server of one test's own, made with initdb in a temporary directory: a test
    may restart it (or kill it) without touching the server every other test is using.

    PostgreSQL will not run as root, so when this process is root the cluster belongs to the
    `postgres` user and its commands run as that user.
    """

    def __init__(self) -> None:
        versions = sorted(BINARIES.glob("*/bin/pg_ctl"))
        if not versions:
            pytest.skip(f"no PostgreSQL server programs to make a cluster with ({BINARIES}/*/bin)")
        self.bin = versions[-1].parent
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                pytest.skip("root, and no runuser to make the cluster as the postgres user")
            self.as_user = [runuser, "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="watchroute-pg-"))
        self.data = str(self.dir / "data")
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*self.as_user, str(self.bin / program), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def pg_ctl(self, action: str) -> subprocess.CompletedProcess[str]:
        """`start`, `restart` (fast: sessions are ended) or `stop`, waiting until it is done."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        # The server's output goes to a file: a server holding this process's pipes open would
        # keep the command from returning.
        log = str(self.dir / "server.log")
        return self._run("pg_ctl", "-D", self.data, "-l", log, "-o", options, "-m", "fast", "-w", action)

    def __enter__(self) -> PrivateCluster:
        try:
            if self.as_user:
                shutil.chown(self.dir, "postgres")
            made = self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
            if made.returncode != 0:
                raise RuntimeError(f"initdb failed: {made.stderr}")
            started = self.pg_ctl("start")
            if started.returncode != 0:
                raise RuntimeError(f"the test's PostgreSQL did not start: {started.stderr}")
        except BaseException:
            self.__exit__()  # nothing left running, nothing left on disk
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
