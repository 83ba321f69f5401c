"""The store under faults: a database locked past the busy timeout refuses writes clearly, and
the server keeps writing once the lock is gone."""

from __future__ import annotations

import sqlite3

import httpx
import pytest


@pytest.mark.timeout(60)
def test_a_locked_database_refuses_writes_then_recovers(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.put("/v1/f/a", json={"n": 1}).status_code == 201
        other = sqlite3.connect(server.database.removeprefix("sqlite:///"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            refused = c.put("/v1/f/a", json={"n": 2})
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert refused.status_code == 503
        assert refused.json()["reason"] == "StoreUnavailable"
        assert refused.headers["retry-after"] == "1"
        # The writer is still alive: the next write commits, on the next revision.
        after = c.put("/v1/f/a", json={"n": 3})
        assert after.status_code == 200
        assert after.json()["revision"] == 2
        assert c.get("/v1/f/a").json()["data"] == {"n": 3}
