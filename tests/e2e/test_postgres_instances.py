"""Several instances on one PostgreSQL database: what must hold across them.

Three server processes share a fresh database. Writers write on all of them; watchers resume
on a different instance each time; each must receive exactly the log (gap-free, in revision
order, nothing twice), whichever instance acknowledged a write and whichever one serves the
watch, and a SIGKILLed instance loses no acknowledged write.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, LiteralString

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.instances import watch_across, write_for
from tests.support.properties import scenario, watcher, write_op
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def cluster(pg_module_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    procs = [ServerProcess(tmp_path_factory.mktemp(f"i{n}"), database=pg_module_url) for n in range(3)]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(write_op, min_size=1, max_size=40),
    writers=st.integers(1, 4),
    watches=st.lists(watcher, min_size=1, max_size=4),
)
def test_every_watcher_gets_exactly_the_log_resuming_on_another_instance_each_time(
    cluster, ops, writers, watches
):
    asyncio.run(scenario([proc.url for proc in cluster], ops, writers, watches))


def value_of(conn: psycopg.Connection[Any], query: LiteralString) -> Any:
    """The one value of the one row that `query` answers."""
    row = conn.execute(query).fetchone()
    assert row is not None, query
    (value,) = row
    return value


def external_commit(url: str, collection: str, id: str, data: dict) -> int:
    """Commit a change the way an instance does, but with no instance told of it (no ring): as
    if another instance had committed it and its doorbell were lost."""
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET search_path TO watchroute")
        (revision,) = conn.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value"
        ).fetchone()  # type: ignore[misc]
        body = json.dumps(data).encode()
        conn.execute(
            "INSERT INTO log VALUES (%s, %s, 'ADDED', %s, %s, %s, %s, NULL)",
            (revision, time.time(), collection, id, revision, body),
        )
        conn.execute(
            "INSERT INTO resources VALUES (%s, %s, %s, %s, %s)", (collection, id, revision, revision, body)
        )
    return revision


def test_a_resume_on_an_instance_behind_waits_for_it_rather_than_refusing(
    pg_url: str, tmp_path: Path
) -> None:
    # The tick far apart: only the watch itself can make the instance read the log in time.
    slow = ServerProcess(tmp_path, database=pg_url, postgres_tail_interval=60).start()
    try:
        assert httpx.put(slow.url + "/v1/n/a", json={}).status_code == 201
        time.sleep(0.3)  # its own listener's first catch-up is behind it
        revision = external_commit(pg_url, "n", "b", {"told": "elsewhere"})
        started = time.monotonic()
        with httpx.stream("GET", slow.url + "/v1/n", params={"watch": "true", "since": revision}) as r:
            assert r.status_code == 200, r.read()
            assert time.monotonic() - started < 2
            assert httpx.put(slow.url + "/v1/n/c", json={}).status_code == 201
            first = json.loads(next(r.iter_lines()))
        assert (first["revision"], first["object"]["id"]) == (revision + 1, "c")
        # The list, and a watch from before it, see the other instance's change too.
        listed = httpx.get(slow.url + "/v1/n", params={"revision": revision}).json()
        assert [item["id"] for item in listed["items"]] == ["a", "b", "c"]
        r = httpx.get(slow.url + "/v1/n", params={"watch": "longpoll", "since": revision - 1, "timeout": 0.5})
        assert [e["object"]["id"] for e in r.json()["events"]] == ["b", "c"]
    finally:
        slow.stop()


def test_a_list_etag_is_not_answered_304_once_another_instance_has_committed(
    pg_url: str, tmp_path: Path
) -> None:
    # The tick far apart and no ring: the instance has not read the other commit when asked.
    slow = ServerProcess(tmp_path, database=pg_url, postgres_tail_interval=60).start()
    try:
        assert httpx.put(slow.url + "/v1/e/a", json={}).status_code == 201
        first = httpx.get(slow.url + "/v1/e")
        etag = first.headers["ETag"]
        assert httpx.get(slow.url + "/v1/e", headers={"If-None-Match": etag}).status_code == 304
        revision = external_commit(pg_url, "e", "b", {"n": 1})
        r = httpx.get(slow.url + "/v1/e", headers={"If-None-Match": etag})
        assert r.status_code == 200, r.text
        assert r.json()["revision"] == revision
        assert sorted(item["id"] for item in r.json()["items"]) == ["a", "b"]
        assert r.headers["ETag"] != etag
    finally:
        slow.stop()


def test_an_instance_that_cannot_catch_up_answers_503_after_a_bounded_wait(
    pg_url: str, tmp_path: Path
) -> None:
    proc = ServerProcess(tmp_path, database=pg_url, postgres_tail_interval=60).start()
    try:
        assert httpx.put(proc.url + "/v1/n/a", json={}).status_code == 201
        time.sleep(0.3)
        with psycopg.connect(pg_url) as conn, conn.transaction():
            revision = external_commit(pg_url, "n", "b", {})
            # The log held by another transaction: the instance cannot read past `revision - 1`.
            conn.execute("LOCK TABLE watchroute.log IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            r = httpx.get(proc.url + "/v1/n", params={"watch": "true", "since": revision}, timeout=10)
            waited = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["reason"] == "CatchingUp" and r.headers["Retry-After"] == "1"
        assert 2.5 < waited < 6
        # Free again: the same request is served.
        deadline = time.monotonic() + 10
        while True:
            r = httpx.get(proc.url + "/v1/n", params={"watch": "longpoll", "since": revision, "timeout": 0.2})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
        assert r.status_code == 200, r.text
    finally:
        proc.stop()


def test_a_sigkilled_instance_loses_no_acknowledged_write_and_watchers_get_exactly_the_log(
    trio: list[ServerProcess], pg_url: str
) -> None:
    urls = [proc.url for proc in trio]

    async def run() -> tuple[list[tuple], list[tuple], list[list[tuple]]]:
        acks: list[tuple] = []
        until: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        watchers = [asyncio.create_task(watch_across(urls[i:] + urls[:i], "k", 0, until)) for i in range(3)]
        writers = [
            asyncio.create_task(write_for(url, "k", f"w{i}-", 3.0, acks)) for i, url in enumerate(urls)
        ]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(trio[0].stop, signal.SIGKILL)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(trio[0].start)
        await asyncio.gather(*writers)
        with psycopg.connect(pg_url) as conn:
            log = conn.execute("SELECT revision, id FROM watchroute.log ORDER BY revision").fetchall()
        until.set_result(log[-1][0])
        return acks, log, await asyncio.wait_for(asyncio.gather(*watchers), 30)

    acks, log, watched = asyncio.run(run())
    assert [revision for revision, _ in log] == list(range(1, len(log) + 1))  # gap-free
    assert len(log) > 50
    assert set(acks) <= {tuple(row) for row in log}  # every acknowledged write survived
    assert {id for _, id in acks if id.startswith("w0-")}  # the killed instance had acknowledged some
    for got in watched:
        assert got == [tuple(row) for row in log]  # exactly the log: in order, nothing twice


def test_an_instance_that_loses_postgresql_refuses_writes_keeps_its_watches_and_recovers(
    pg_url: str, tmp_path: Path
) -> None:
    from tests.support.postgres import set_connections_allowed

    proc = ServerProcess(tmp_path, database=pg_url).start()
    try:
        assert httpx.put(proc.url + "/v1/n/a", json={}).status_code == 201
        params: dict[str, str | int | float] = {"watch": "true", "since": 1, "heartbeat": 1}
        with httpx.stream("GET", proc.url + "/v1/n", params=params, timeout=10) as watch:
            assert watch.status_code == 200
            lines = watch.iter_lines()
            set_connections_allowed(pg_url, False)
            try:
                r = httpx.put(proc.url + "/v1/n/b", json={}, timeout=10)
                assert r.status_code == 503, r.text
                assert r.json()["reason"] == "StoreUnavailable" and int(r.headers["Retry-After"]) >= 1
                r = httpx.get(proc.url + "/v1/n/a", timeout=10)
                assert r.status_code == 503 and r.json()["reason"] == "StoreUnavailable"
                assert httpx.get(proc.url + "/readyz", timeout=10).status_code == 503
                # The open watch goes on: its heartbeats still come.
                assert json.loads(next(lines))["type"] == "BOOKMARK"
            finally:
                set_connections_allowed(pg_url, True)
            deadline = time.monotonic() + 10
            while (r := httpx.put(proc.url + "/v1/n/b", json={}, timeout=10)).status_code != 201:
                assert r.status_code == 503 and time.monotonic() < deadline, r.text
                time.sleep(0.2)
            event = next(e for e in map(json.loads, lines) if e["type"] != "BOOKMARK")
            assert (event["type"], event["object"]["id"]) == ("ADDED", "b")
        assert httpx.get(proc.url + "/readyz").status_code == 200
        assert httpx.get(proc.url + "/v1/n/a").status_code == 200
    finally:
        proc.stop()


def test_compaction_one_horizon_and_410_on_every_instance(pg_url: str, tmp_path: Path) -> None:
    settings: dict[str, Any] = {"history_events": 5, "compaction_interval": 0.1}
    procs = []
    try:
        for n in range(3):
            (tmp_path / f"i{n}").mkdir()
            procs.append(ServerProcess(tmp_path / f"i{n}", database=pg_url, **settings).start())
        # While another holds the compaction turn, nobody compacts.
        with psycopg.connect(pg_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(hashtextextended('watchroute:watchroute:compact', 0))")
            for i in range(20):
                assert httpx.put(f"{procs[i % 3].url}/v1/h/{i}", json={}).status_code == 201
            time.sleep(0.5)
            compacted = value_of(holder, "SELECT value FROM watchroute.meta WHERE key = 'compacted'")
            assert compacted == 0
        for proc in procs:
            deadline = time.monotonic() + 10
            while (
                r := httpx.get(proc.url + "/v1/h", params={"watch": "true", "since": 2, "timeout": 1})
            ).status_code != 410:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.1)
            assert r.json()["reason"] == "Expired"
            r = httpx.get(proc.url + "/v1/h", params={"watch": "longpoll", "since": 15, "timeout": 0.1})
            assert [e["revision"] for e in r.json()["events"]] == [16, 17, 18, 19, 20]
        with psycopg.connect(pg_url) as conn:
            compacted = value_of(conn, "SELECT value FROM watchroute.meta WHERE key = 'compacted'")
            oldest = value_of(conn, "SELECT min(revision) FROM watchroute.log")
        assert compacted == 15 and oldest == 16
    finally:
        for proc in procs:
            proc.stop()
