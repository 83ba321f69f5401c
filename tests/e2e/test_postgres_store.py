"""The PostgreSQL store's own concerns: its schema, API keys kept beside the data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.security_keys import apikey_cli, create_apikey
from tests.support.server import ServerProcess
from watchroute.core.change import Change
from watchroute.core.problems import Problem
from watchroute.store import WriteOp
from watchroute.store.postgres import PostgresStore
from watchroute.store.postgres.schema import SCHEMA_VERSION


def noting_revisions(into: list[int]) -> Callable[[list[Change]], None]:
    """A commit listener that notes each change's revision in `into`."""
    return lambda changes: into.extend(c.revision for c in changes)


def test_instances_starting_together_create_the_schema_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, "wr_together") for _ in range(6)]
    with ThreadPoolExecutor(len(stores)) as pool:
        versions = list(pool.map(lambda store: store.migrate(), stores))
    assert versions == [SCHEMA_VERSION] * len(stores)
    with psycopg.connect(pg_url) as conn:
        meta: dict[str, int] = dict(conn.execute("SELECT key, value FROM wr_together.meta").fetchall())
    assert meta == {"revision": 0, "compacted": 0, "schema_version": SCHEMA_VERSION}


def test_a_schema_newer_than_the_release_is_refused_with_a_clear_message(pg_url: str, tmp_path: Path) -> None:
    PostgresStore(pg_url).migrate()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE watchroute.meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError) as refused:
        ServerProcess(tmp_path, database=pg_url).start()
    assert "version 99, newer than this release knows" in str(refused.value)


def test_the_schema_is_configurable(pg_url: str, tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, database=pg_url, postgres_schema="app_watch").start()
    try:
        assert httpx.put(proc.url + "/v1/notes/a", json={"x": 1}).status_code == 201
    finally:
        proc.stop()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT id, revision FROM app_watch.resources").fetchall() == [("a", 1)]
        assert conn.execute("SELECT to_regclass('watchroute.resources')").fetchone() == (None,)


def test_api_keys_are_kept_in_postgresql(pg_url: str, tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, database=pg_url, auth="apikey", apikey_cache_seconds=0.2).start()
    try:
        id, key = create_apikey(pg_url, "read:notes", "write:notes", subject="svc")
        r = httpx.put(proc.url + "/v1/notes/a", json={"x": 1}, headers={"X-API-Key": key})
        assert r.status_code == 201, r.text
        assert httpx.get(proc.url + "/v1/notes/a", headers={"X-API-Key": key}).status_code == 200
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute("SELECT id, subject, digest FROM watchroute.api_keys").fetchall()
        assert [(row[0], row[1]) for row in rows] == [(id, "svc")] and key.encode() not in rows[0][2]
        assert apikey_cli(pg_url, "revoke", id).returncode == 0
        deadline = time.monotonic() + 5
        while httpx.get(proc.url + "/v1/notes/a", headers={"X-API-Key": key}).status_code == 200:
            assert time.monotonic() < deadline, "a revoked key kept working"
            time.sleep(0.1)
        refused = httpx.get(proc.url + "/v1/notes/a", headers={"X-API-Key": key})
        assert refused.status_code == 401
    finally:
        proc.stop()


async def test_stores_on_one_database_hand_on_each_others_commits_in_revision_order(pg_url: str) -> None:
    """Three instances' stores in one process: each hears every commit, its own and the
    others', once and strictly in revision order (an instance's own commit can come after
    another's that it has not read yet: it is handed on only after that one)."""
    heard: list[list[int]] = [[], [], []]
    # No tick: only the doorbell and the write groups themselves read the others' commits.
    stores = [PostgresStore(pg_url, tail_interval=30) for _ in heard]
    for store, revisions in zip(stores, heard, strict=True):
        await store.open(noting_revisions(revisions))
    try:

        async def write(store: PostgresStore, n: int) -> None:
            for i in range(40):
                ops = [WriteOp("put", "t", f"{n}-{i}-{k}", {"k": k}) for k in range(1 + i % 3)]
                await store.write(ops)

        await asyncio.gather(*(write(stores[n % 3], n) for n in range(9)))
        total = 9 * sum(1 + i % 3 for i in range(40))
        deadline = time.monotonic() + 5
        while any(len(revisions) < total for revisions in heard) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for revisions in heard:
            assert revisions == list(range(1, total + 1))
        assert [store.revision for store in stores] == [total] * 3
    finally:
        for store in stores:
            await store.close()


async def test_a_refused_job_leaves_the_others_of_its_group_to_commit(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    heard: list[int] = []
    await store.open(lambda changes: heard.extend(c.revision for c in changes))
    try:
        await store.write([WriteOp("put", "t", "taken", {})])
        results = await asyncio.gather(
            *(
                store.write([WriteOp("put", "t", "taken", {}, must_not_exist=True)])
                if n % 3 == 1
                else store.write([WriteOp("put", "t", f"r{n}", {"n": n}), WriteOp("delete", "t", f"r{n}")])
                for n in range(30)
            ),
            return_exceptions=True,
        )
        refused = [r for n, r in enumerate(results) if n % 3 == 1]
        assert all(isinstance(r, Problem) and r.status == 412 for r in refused)
        committed = sorted(c.revision for n, r in enumerate(results) if n % 3 != 1 for c in r)  # type: ignore[union-attr]
        assert committed == list(range(2, 2 + 2 * 20)) == heard[1:]
    finally:
        await store.close()


async def test_a_large_group_updates_creates_and_deletes_like_a_small_one(pg_url: str) -> None:
    """A group of many changes goes by COPY and writes its resources in other statements than a
    small one: the rows it leaves must be the same."""
    store = PostgresStore(pg_url)
    await store.open(lambda changes: None)
    try:
        await store.write([WriteOp("put", "t", f"r{n}", {"n": n}) for n in range(400)])
        ops = [WriteOp("put", "t", f"r{n}", {"n": n, "again": True}) for n in range(0, 400, 2)]  # updates
        ops += [WriteOp("put", "t", f"new{n}", {"n": n}) for n in range(200)]  # creations
        ops += [WriteOp("delete", "t", f"r{n}") for n in range(1, 400, 4)]  # deletions
        ops += [WriteOp("delete", "t", "r3"), WriteOp("put", "t", "r3", {"back": True})]  # gone, then back
        changes = await store.write(ops)
        assert len(changes) == len(ops) >= 256 and changes[-1].revision == 400 + len(ops)
        with psycopg.connect(pg_url) as conn:
            rows = {
                rid: (revision, created)
                for rid, revision, created in conn.execute(
                    "SELECT id, revision, created_revision FROM watchroute.resources WHERE collection = 't'"
                )
            }
        expected = {f"r{n}": (n + 1, n + 1) for n in range(3, 400, 4)}  # untouched
        expected |= {c.id: (c.revision, c.created_revision) for c in changes if c.type != "DELETED"}
        assert rows == expected
        assert rows["r0"][1] == 1  # an update keeps its creation
        assert rows["r3"][0] == rows["r3"][1] == 400 + len(ops)  # created again
        assert "r1" not in rows and len(rows) == 200 + 200 + 100
    finally:
        await store.close()


async def test_the_writer_measures_its_group_commits_for_metrics(pg_url: str) -> None:
    store = PostgresStore(pg_url, max_document_bytes=64)
    await store.open(lambda changes: None)
    try:
        await asyncio.gather(*(store.write([WriteOp("put", "t", f"r{n}", {"n": n})]) for n in range(5)))
        with pytest.raises(Problem) as refused:  # the limits reach the engine's writer too
            await store.write([WriteOp("put", "t", "big", {"text": "x" * 100})])
        assert refused.value.status == 413
        seconds, groups = store.figures.write_seconds, store.figures.commit_writes
        # Every write answered (the refused one too), in 2 to 6 group commits.
        assert sum(seconds.counts) == 6 and groups.sum == 6 and 2 <= sum(groups.counts) <= 6
    finally:
        await store.close()


def test_a_write_that_waits_too_long_for_the_revision_counter_is_refused_with_503(
    pg_url: str, tmp_path: Path
) -> None:
    # postgres:// is the other spelling libpq takes.
    url = pg_url.replace("postgresql://", "postgres://", 1)
    proc = ServerProcess(tmp_path, database=url, postgres_lock_timeout=0.5).start()
    try:
        assert httpx.put(proc.url + "/v1/n/a", json={}).status_code == 201
        with psycopg.connect(pg_url) as frozen:  # a transaction that holds the counter and stalls
            frozen.execute("SELECT value FROM watchroute.meta WHERE key = 'revision' FOR UPDATE")
            started = time.monotonic()
            r = httpx.put(proc.url + "/v1/n/b", json={}, timeout=10)
            assert r.status_code == 503 and r.json()["reason"] == "StoreUnavailable", r.text
            assert r.headers["Retry-After"] == "1" and time.monotonic() - started < 3
        r = httpx.put(proc.url + "/v1/n/b", json={})
        assert r.status_code == 201 and r.json()["revision"] == 2  # the refused write took none
    finally:
        proc.stop()


async def test_an_instance_far_behind_reads_the_others_commits_before_its_own_in_order(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watchroute.store.postgres import writer

    monkeypatch.setattr(writer, "CATCH_UP_CHUNK", 4)  # "far" is 4 changes behind
    heard: list[int] = []
    ahead = PostgresStore(pg_url)
    behind = PostgresStore(pg_url, tail_interval=30)
    await ahead.open(lambda changes: None)
    await behind.open(lambda changes: heard.extend(c.revision for c in changes))
    try:
        assert behind._doorbell is not None
        behind._doorbell.stop()  # no ring: its first write group finds itself 20 behind
        await asyncio.to_thread(behind._doorbell.join)
        await ahead.write([WriteOp("put", "t", f"a{n}", {}) for n in range(20)])
        [change] = await behind.write([WriteOp("put", "t", "b", {})])
        assert change.revision == 21
        assert heard == list(range(1, 22))
    finally:
        await ahead.close()
        await behind.close()


async def test_database_connections_stay_bounded_whatever_the_number_of_watchers(
    pg_url: str, tmp_path: Path
) -> None:
    proc = ServerProcess(tmp_path, database=pg_url, postgres_pool_size=3, window_events=16).start()
    name = pg_url.rpartition("/")[2]
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=20) as c:
            ops = [{"op": "put", "collection": "w", "id": f"r{n}", "data": {"n": n}} for n in range(300)]
            assert (await c.post("/v1/_batch", json={"ops": ops})).status_code == 200

            async def watch() -> int:
                # From the start: far behind the window, each reads the log from the database.
                r = await c.get("/v1/w", params={"watch": "longpoll", "since": 0, "timeout": 1})
                return len(r.json()["events"])

            seen: list[int] = []

            async def count() -> None:
                with psycopg.connect(pg_url) as conn:
                    while True:
                        (n,) = conn.execute(  # type: ignore[misc]
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()",
                            (name,),
                        ).fetchone()
                        seen.append(n)
                        await asyncio.sleep(0.02)

            counter = asyncio.create_task(count())
            got = await asyncio.gather(*(watch() for _ in range(60)))
            counter.cancel()
        assert all(n > 0 for n in got)
        assert seen and max(seen) <= 3 + 2  # the pool, the writer, the listener
    finally:
        proc.stop()


async def test_a_snapshot_reads_every_page_at_its_one_revision(pg_url: str) -> None:
    from watchroute.core.filter import compile_filter

    store = PostgresStore(pg_url, pool_size=2)
    await store.open(lambda changes: None)
    try:
        await store.write([WriteOp("put", "t", f"r{n:02}", {"n": n}) for n in range(25)])
        snap = await store.snapshot("t")
        assert snap.revision == 25
        first = await snap.page(None, 10, 1 << 20)
        # Commits meanwhile: a change, a deletion and a creation, in pages still to come.
        await store.write([WriteOp("put", "t", "r20", {"n": -1}), WriteOp("delete", "t", "r21")])
        await store.write([WriteOp("put", "t", "r99", {"n": 99})])
        rest: list = []
        while page := await snap.page(None, 10, 1 << 20):
            rest += page
        assert [(r.id, r.data["n"], r.revision) for r in first + rest] == [
            (f"r{n:02}", n, n + 1) for n in range(25)
        ]
        snap.close()
        snap.close()  # idempotent
        # Filtered, and by size: past max_bytes by no more than the row that crosses it.
        snap = await store.snapshot("t")
        page = await snap.page(compile_filter("n>=20"), 100, 1)
        assert [(r.id, r.data["n"]) for r in page] == [("r22", 22)]  # r20 is -1, r21 gone
        snap.close()
        one = await store.snapshot("t", "r99")
        assert [r.id for r in await one.page(None, 10, 1 << 20)] == ["r99"] and one.done
        one.close()
        await asyncio.sleep(0.05)  # closed snapshots hand their connections back
        assert store._pool is not None and store._pool.get_stats()["pool_available"] >= 1
    finally:
        await store.close()


async def test_unavailable_says_why_writes_fail_and_clears_once_the_database_is_back(pg_url: str) -> None:
    from tests.support.postgres import set_connections_allowed

    store = PostgresStore(pg_url)
    await store.open(lambda changes: None)
    try:
        assert await store.unavailable() is None
        set_connections_allowed(pg_url, False)
        try:
            with pytest.raises(Problem) as refused:
                await store.write([WriteOp("put", "t", "a", {})])
            assert refused.value.reason == "StoreUnavailable"
            reason = await store.unavailable()
            assert reason is not None and "cannot be reached" in reason
        finally:
            set_connections_allowed(pg_url, True)
        assert await store.unavailable() is None  # its own probe reached the database
        [change] = await store.write([WriteOp("put", "t", "a", {})])
        assert change.revision == 1
    finally:
        await store.close()
