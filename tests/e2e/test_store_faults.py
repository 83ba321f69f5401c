"""The store under faults: a database locked past the busy timeout refuses writes clearly, and
the server keeps writing once the lock is gone; a database file deleted, moved or replaced under
a running server, or a disk that refuses writes, makes writes answer 503 and /readyz say so,
instead of writes acknowledged and lost."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest


def _database_file(server) -> Path:
    return Path(server.database.removeprefix("sqlite:///"))


def _assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == "StoreUnavailable"
    assert response.headers["retry-after"] == "1"


def _assert_not_ready(c: httpx.Client, why: str) -> None:
    ready = c.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["reason"] == "StoreUnavailable"
    assert why in ready.json()["detail"]


@pytest.mark.timeout(60)
def test_a_locked_database_refuses_writes_then_recovers(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.put("/v1/f/a", json={"n": 1}).status_code == 201
        other = sqlite3.connect(_database_file(server), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            refused = c.put("/v1/f/a", json={"n": 2})
            # Contention passes by itself: the instance stays ready.
            assert c.get("/readyz").status_code == 200
        finally:
            other.execute("ROLLBACK")
            other.close()
        _assert_store_unavailable(refused)
        # The writer is still alive: the next write commits, on the next revision.
        after = c.put("/v1/f/a", json={"n": 3})
        assert after.status_code == 200
        assert after.json()["revision"] == 2
        assert c.get("/v1/f/a").json()["data"] == {"n": 3}


def _refused_while_gone(c: httpx.Client, url: str) -> None:
    for i in range(5):
        _assert_store_unavailable(c.put(f"/v1/f/after-{i}", json={"i": i}))
    # Reads at once, so that readers that had no connection yet open one: the file that is
    # still open may answer, a reader that finds no file says the store is unavailable.
    with ThreadPoolExecutor(8) as pool:
        reads = list(pool.map(lambda _: httpx.get(f"{url}/v1/f/a", timeout=10), range(16)))
    for read in reads:
        if read.status_code != 200:
            _assert_store_unavailable(read)
    _assert_store_unavailable(c.post("/v1/f", json={"i": 5}))
    batch = {"ops": [{"op": "put", "collection": "f", "id": "b", "data": {}}]}
    _assert_store_unavailable(c.post("/v1/_batch", json=batch))
    _assert_not_ready(c, "deleted, moved or replaced")


def test_writes_to_a_deleted_or_replaced_database_file_are_refused(make_server):
    server = make_server(compaction_interval=0.1)
    path = _database_file(server)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.put("/v1/f/a", json={"n": 1}).status_code == 201
        assert c.get("/readyz").status_code == 200
        copy = path.with_name("copy.db")
        with sqlite3.connect(path) as live, sqlite3.connect(copy) as backup:
            live.backup(backup)
        path.unlink()
        _refused_while_gone(c, server.url)
        time.sleep(0.3)  # compaction passes
        assert not path.exists()  # nothing made a new, empty database in its place
        # Said once, in the log, with the path; not a traceback per write or compaction pass.
        log = server.log_path.read_text()
        assert log.count(f"{path} is no longer the database file") == 1
        assert "Traceback" not in log
        # A file put at the path is another file, not the one whose writes the server holds.
        copy.rename(path)
        _refused_while_gone(c, server.url)


def test_writes_to_a_renamed_database_file_are_refused_until_it_is_back(server):
    path = _database_file(server)
    moved = path.with_name("moved.db")
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.put("/v1/f/a", json={"n": 1}).status_code == 201
        path.rename(moved)
        _refused_while_gone(c, server.url)
        moved.rename(path)
        assert c.get("/readyz").status_code == 200
        written = c.put("/v1/f/a", json={"n": 2})
        assert written.status_code == 200
        assert written.json()["revision"] == 2  # the refused writes took no revision
    with sqlite3.connect(path) as db:  # and it is in the file at the path
        assert db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone() == (2,)


def test_readiness_says_writes_fail_on_a_full_disk_until_one_commits(server):
    """The disk fills: every write that needs room fails. The fault is made with the server's
    file size limit (RLIMIT_FSIZE) set at the size of its write-ahead log, so that nothing the
    store appends there fits, as on a full disk; SQLite reports it as an I/O error."""
    path = _database_file(server)
    proc = psutil.Process(server.pid)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.put("/v1/f/a", json={"n": 1}).status_code == 201
        assert c.get("/readyz").status_code == 200
        wal = Path(f"{path}-wal")
        unlimited = proc.rlimit(psutil.RLIMIT_FSIZE)
        proc.rlimit(psutil.RLIMIT_FSIZE, (wal.stat().st_size, unlimited[1]))
        try:
            for i in range(3):
                _assert_store_unavailable(c.put(f"/v1/f/full-{i}", json={"blob": "x" * 10_000}))
            # Not ready, and still not after a check that tries a write itself.
            _assert_not_ready(c, "disk I/O error")
            _assert_not_ready(c, "disk I/O error")
        finally:
            proc.rlimit(psutil.RLIMIT_FSIZE, unlimited)
        # Room again: the next check's own write commits (no client writes to an instance out
        # of rotation), and takes no revision.
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["revision"] == 1
        written = c.put("/v1/f/a", json={"n": 2})
        assert written.status_code == 200
        assert written.json()["revision"] == 2
        assert c.get("/v1/f/full-0").status_code == 404
