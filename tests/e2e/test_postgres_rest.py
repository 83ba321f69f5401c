"""The REST and watch tests of the SQLite store, run again on the PostgreSQL store.

The tests are the same functions (imported); only the server under them changes: one server
process on a fresh PostgreSQL database for the module, and one per test where a test starts its
own. Skipped, saying why, when PostgreSQL cannot be reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_batch import *  # noqa: F403
from tests.e2e.test_group_writes import *  # noqa: F403
from tests.e2e.test_rest import *  # noqa: F403
from tests.e2e.test_watch_ndjson_longpoll import *  # noqa: F403
from tests.e2e.test_watch_sse import *  # noqa: F403
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def api(pg_module_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    proc = ServerProcess(tmp_path_factory.mktemp("pg-api"), database=pg_module_url).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as c:
            yield c
    finally:
        proc.stop()


@pytest.fixture
def server(pg_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path, database=pg_url).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def make_server(pg_url: str, tmp_path: Path) -> Iterator:
    """Servers with settings of the test's own, each on a database of its own."""
    from tests.support.postgres import fresh_database

    started: list[ServerProcess] = []
    databases = []

    def make(**settings: Any) -> ServerProcess:
        database = fresh_database() if started else None
        url = database.__enter__() if database is not None else pg_url
        if database is not None:
            databases.append(database)
        proc = ServerProcess(tmp_path / f"s{len(started)}", database=url, **settings)
        proc.workdir.mkdir()
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.stop()
    for database in databases:
        database.__exit__(None, None, None)
