from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .server import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server on an empty database, stopped after the test."""
    proc = ServerProcess(tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """A factory for servers with settings of the test's own (history horizon, window...)."""
    started: list[ServerProcess] = []

    def make(**settings: object) -> ServerProcess:
        proc = ServerProcess(tmp_path / f"s{len(started)}", **settings)
        proc.workdir.mkdir()
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c
