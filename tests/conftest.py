from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerFactory, ServerProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules with a `slow` test first: `make test` hands a module to each process as it
    frees up, and a long one begun last would keep the run going while the others sit idle."""
    heavy = {module_name(item) for item in items if item.get_closest_marker("slow")} - {None}
    items.sort(key=lambda item: module_name(item) not in heavy)  # stable


def module_name(item: pytest.Item) -> str | None:
    """The name of the module a test function is in (an Item in general has none)."""
    module = getattr(item, "module", None)
    return module.__name__ if module is not None else None


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

    def make(**settings: Any) -> ServerProcess:
        proc = ServerProcess(tmp_path / f"s{len(started)}", **settings)
        proc.workdir.mkdir()
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """A factory for servers a module's tests share (starting one takes most of a second), each
    with settings of its own (auth, rules, limits); all stopped when the module is done."""
    started: list[ServerProcess] = []

    def make(name: str, **settings: Any) -> ServerProcess:
        proc = ServerProcess(tmp_path_factory.mktemp(name), **settings)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def shared_server(module_servers: ServerFactory) -> ServerProcess:
    """One server with the default settings for a module; tests use collections of their own."""
    return module_servers("shared")


@pytest.fixture(scope="module")
def api(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the module's shared server."""
    with httpx.Client(base_url=shared_server.url, timeout=10) as c:
        yield c


@pytest.fixture
def coll() -> str:
    """A collection of the test's own."""
    return "c" + uuid.uuid4().hex[:12]


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture
async def aclient(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database of the test's own (tests/postgres.py), dropped after."""
    from tests.support.postgres import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """The same for a module's tests together."""
    from tests.support.postgres import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture
def trio(pg_url: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Three instances on one fresh PostgreSQL database (stopped after, before the database is
    dropped)."""
    procs = []
    for n in range(3):
        (tmp_path / f"i{n}").mkdir()
        procs.append(ServerProcess(tmp_path / f"i{n}", database=pg_url))
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()
