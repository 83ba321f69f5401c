"""TTL leases: a write with `ttl` leaves a resource that the server deletes once it lapses.

What a client checks: the representation says when it expires; a GET after expiry is 404 even
before the sweep; the lapse is one ordinary DELETED (marked `expired`) on a revision of its own,
in the log like any change; a renewal extends it and a write without ttl makes it permanent;
a lease that lapsed while the server was down is deleted at the next start; processes sharing a
store delete each lapsed lease exactly once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.rest import MERGE, assert_problem
from tests.support.server import ServerProcess
from tests.support.watching import ndjson
from watchroute.client import Client
from watchroute.core.problems import Problem
from watchroute.store import WriteOp
from watchroute.store.postgres import PostgresStore, schema
from watchroute.store.sqlite import SQLiteStore
from watchroute.wire.events import event_json

SWEEP = 0.2  # the servers' sweep interval here: expiry within a fraction of a second


def log_of(c: httpx.Client, coll: str) -> list[dict[str, Any]]:
    """Every change of `coll` in the log, from the start (long-polls from revision 0 on: each
    answers what is ready, which may be a part)."""
    events: list[dict[str, Any]] = []
    since = 0
    while True:
        r = c.get(f"/v1/{coll}", params={"watch": "longpoll", "since": since, "timeout": 0.05})
        assert r.status_code == 200, r.text
        if not r.json()["events"]:
            return events
        events += r.json()["events"]
        since = r.json()["revision"]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def expired_deletions(c: httpx.Client, coll: str) -> Counter[str]:
    return Counter(
        e["object"]["id"] for e in log_of(c, coll) if e["type"] == "DELETED" and e.get("expired") is True
    )


def expiry(resource: dict[str, Any]) -> float:
    return datetime.fromisoformat(resource["expires_at"]).timestamp()


@pytest.fixture(scope="module")
def leases(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("leases"), lease_sweep_interval=SWEEP).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as c:
            yield c
    finally:
        proc.stop()


async def test_a_lapsed_lease_is_one_deleted_event_marked_expired(leases: httpx.Client, coll: str) -> None:
    async with httpx.AsyncClient(base_url=str(leases.base_url), timeout=10) as ac:
        events: list[dict[str, Any]] = []

        async def watch() -> None:
            async for event in ndjson(ac, f"/v1/{coll}", {"heartbeat": 1}):
                if event["type"] != "BOOKMARK":
                    events.append(event)
                if event["type"] == "DELETED":
                    return

        watching = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        before = time.time()
        r = await ac.put(f"/v1/{coll}/alice", params={"ttl": 1}, json={"online": True})
        assert r.status_code == 201, r.text
        written = r.json()
        assert before + 1 <= expiry(written) <= time.time() + 1.01
        assert written["expires_at"].endswith("Z")
        await asyncio.wait_for(watching, 5)
    lapsed = time.time()
    added, deleted = events
    assert added["type"] == "ADDED" and added["object"]["expires_at"] == written["expires_at"]
    assert "expired" not in added
    assert deleted["type"] == "DELETED" and deleted["expired"] is True
    assert deleted["revision"] == added["revision"] + 1  # an ordinary change, on the next revision
    assert deleted["object"]["data"] == {"online": True}
    # Exact to about a second: deleted after the expiry, and soon after it.
    assert expiry(written) <= lapsed <= expiry(written) + 1.5
    # In the log as well: a watch resuming from before it gets the same one DELETED.
    assert expired_deletions(leases, coll) == Counter({"alice": 1})
    assert leases.get(f"/v1/{coll}/alice").status_code == 404


def test_a_renewal_extends_the_lease_and_a_write_without_ttl_makes_it_permanent(
    leases: httpx.Client, coll: str
) -> None:
    first = leases.put(f"/v1/{coll}/bob", params={"ttl": 1}, json={"n": 1}).json()
    time.sleep(0.6)
    renewed = leases.patch(f"/v1/{coll}/bob", params={"ttl": 2}, content=b'{"n": 2}', headers=MERGE)
    assert renewed.status_code == 200, renewed.text
    assert expiry(renewed.json()) >= expiry(first) + 1.5
    time.sleep(0.8)  # past the first expiry: still there
    got = leases.get(f"/v1/{coll}/bob")
    assert got.status_code == 200 and got.json()["data"] == {"n": 2}
    assert got.json()["expires_at"] == renewed.json()["expires_at"]
    permanent = leases.put(f"/v1/{coll}/bob", json={"n": 3})
    assert "expires_at" not in permanent.json()
    time.sleep(2.0)  # past the renewed expiry and a sweep or more
    got = leases.get(f"/v1/{coll}/bob")
    assert got.status_code == 200 and "expires_at" not in got.json()
    assert expired_deletions(leases, coll) == Counter()


def test_created_and_batched_leases_lapse_too(leases: httpx.Client, coll: str) -> None:
    created = leases.post(f"/v1/{coll}", params={"ttl": 1}, json={"typing": True})
    assert created.status_code == 201 and "expires_at" in created.json()
    r = leases.post(
        "/v1/_batch",
        json={
            "ops": [
                {"op": "put", "collection": coll, "id": "t1", "data": {}, "ttl": 1},
                {"op": "put", "collection": coll, "id": "keep", "data": {}},
            ]
        },
    )
    assert r.status_code == 200, r.text
    leased, kept = r.json()["results"]
    assert "expires_at" in leased and "expires_at" not in kept
    ids = {created.json()["id"], "t1"}
    wait_for(lambda: set(expired_deletions(leases, coll)) == ids, 5)
    assert expired_deletions(leases, coll) == Counter(dict.fromkeys(ids, 1))
    assert [r["id"] for r in leases.get(f"/v1/{coll}").json()["items"]] == ["keep"]


@pytest.mark.parametrize(
    "ttl", ["0", "0.5", "-1", "abc", "nan", "inf", "", str(400 * 86400)], ids=lambda t: t or "empty"
)
def test_a_bad_ttl_is_refused_and_writes_nothing(leases: httpx.Client, coll: str, ttl: str) -> None:
    r = leases.put(f"/v1/{coll}/x", params={"ttl": ttl}, json={})
    assert_problem(r, 400, "BadTTL")
    assert leases.get(f"/v1/{coll}/x").status_code == 404
    r = leases.post(
        "/v1/_batch",
        json={"ops": [{"op": "put", "collection": coll, "id": "y", "data": {}, "ttl": ttl}]},
    )
    assert_problem(r, 400, "BadTTL")
    assert log_of(leases, coll) == []


def test_a_delete_takes_no_ttl(leases: httpx.Client, coll: str) -> None:
    leases.put(f"/v1/{coll}/x", json={})
    assert_problem(leases.delete(f"/v1/{coll}/x", params={"ttl": 5}), 400, "BadTTL")
    batch = {"ops": [{"op": "delete", "collection": coll, "id": "x", "ttl": 5}]}
    assert_problem(leases.post("/v1/_batch", json=batch), 400, "BadTTL")
    assert leases.get(f"/v1/{coll}/x").status_code == 200


def test_the_client_and_the_cli_give_a_ttl(leases: httpx.Client, coll: str) -> None:
    url = str(leases.base_url)
    with Client(url) as client:
        resource = client.put(coll, "py", {"a": 1}, ttl=1)
        assert resource.expires_at is not None and resource.expires_at.timestamp() > time.time()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "watchroute",
            "put",
            coll,
            "cli",
            '{"b": 2}',
            "--ttl",
            "1",
            "--url",
            url,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "expires_at" in json.loads(out.stdout)
    wait_for(lambda: set(expired_deletions(leases, coll)) == {"py", "cli"}, 5)
    with Client(url) as client, client.watch(coll, since=0) as watch:
        event = next(e for e in watch if e.type == "DELETED")
    # The client reads the marker: a DELETED by expiry, not by another client.
    assert event.expired and event.to_json()["expired"] is True


def lapse_while_down(server: ServerProcess, coll: str) -> None:
    """Leases that lapse while the server is stopped are deleted, once each, at its start."""
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for n in range(5):
            assert c.put(f"/v1/{coll}/p{n}", params={"ttl": 1}, json={"n": n}).status_code == 201
    server.stop()
    time.sleep(1.2)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        wait_for(lambda: len(expired_deletions(c, coll)) == 5, 5)
        assert expired_deletions(c, coll) == Counter({f"p{n}": 1 for n in range(5)})
        assert c.get(f"/v1/{coll}").json()["items"] == []


def test_a_lease_lapsed_while_the_server_was_down_is_deleted_at_start(make_server, coll: str) -> None:
    lapse_while_down(make_server(lease_sweep_interval=SWEEP), coll)


def test_reads_leave_a_lapsed_lease_out_before_the_sweep(make_server, coll: str) -> None:
    server = make_server(lease_sweep_interval=60)  # the sweep runs at start, then not for a minute
    with httpx.Client(base_url=server.url, timeout=10) as c:
        time.sleep(0.3)
        assert c.put(f"/v1/{coll}/gone", params={"ttl": 1}, json={}).status_code == 201
        assert c.put(f"/v1/{coll}/stays", json={}).status_code == 201
        time.sleep(1.1)
        assert_problem(c.get(f"/v1/{coll}/gone"), 404, "NotFound")
        assert [r["id"] for r in c.get(f"/v1/{coll}").json()["items"]] == ["stays"]
        r = c.get(f"/v1/{coll}", params={"watch": "longpoll", "initial": "true", "timeout": 0.1})
        assert [e["object"]["id"] for e in r.json()["events"] if e["type"] == "ADDED"] == ["stays"]
        assert expired_deletions(c, coll) == Counter()  # not swept yet


def many_leases_on_two_processes(urls: list[str], coll: str, count: int = 40) -> None:
    """Leases written through either process lapse with exactly one DELETED each."""
    clients = [httpx.Client(base_url=url, timeout=10) for url in urls]
    try:
        for n in range(count):
            c = clients[n % len(clients)]
            assert c.put(f"/v1/{coll}/l{n}", params={"ttl": 1}, json={"n": n}).status_code == 201
        for c in clients:
            wait_for(lambda c=c: len(expired_deletions(c, coll)) == count, 10)
        time.sleep(3 * SWEEP)  # further sweeps on every process find nothing more to delete
        for c in clients:
            assert expired_deletions(c, coll) == Counter({f"l{n}": 1 for n in range(count)})
            assert [e["type"] for e in log_of(c, coll)].count("DELETED") == count
    finally:
        for c in clients:
            c.close()


def test_two_worker_processes_delete_each_lapsed_lease_once(make_server, coll: str) -> None:
    server = make_server(workers=2, lease_sweep_interval=SWEEP)
    many_leases_on_two_processes([server.url, server.url], coll)


def test_two_instances_on_one_sqlite_file_delete_each_lapsed_lease_once(tmp_path: Path, coll: str) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [ServerProcess(tmp_path, database=database, lease_sweep_interval=SWEEP) for _ in range(2)]
    procs[1].log_path = tmp_path / "server1.log"
    try:
        for proc in procs:
            proc.start()
        many_leases_on_two_processes([p.url for p in procs], coll)
    finally:
        for proc in procs:
            proc.stop()


# -- PostgreSQL ------------------------------------------------------------------------------


def test_postgres_instances_delete_each_lapsed_lease_once(pg_url: str, tmp_path: Path, coll: str) -> None:
    procs = [ServerProcess(tmp_path / f"i{n}", database=pg_url, lease_sweep_interval=SWEEP) for n in range(2)]
    try:
        for proc in procs:
            proc.workdir.mkdir()
            proc.start()
        many_leases_on_two_processes([p.url for p in procs], coll)
    finally:
        for proc in procs:
            proc.stop()


def test_postgres_lease_lapsed_while_down_is_deleted_at_start(pg_url: str, tmp_path: Path, coll: str) -> None:
    server = ServerProcess(tmp_path, database=pg_url, lease_sweep_interval=SWEEP).start()
    try:
        lapse_while_down(server, coll)
        with httpx.Client(base_url=server.url, timeout=10) as c:
            # Renewal and permanence on this engine too.
            c.put(f"/v1/{coll}/r", params={"ttl": 1}, json={})
            c.put(f"/v1/{coll}/r", json={})
            time.sleep(1.2 + SWEEP)
            assert c.get(f"/v1/{coll}/r").status_code == 200
    finally:
        server.stop()


# -- the store: the guarded delete, and databases made before leases -------------------------


async def renewal_wins_over_the_sweep(store) -> None:
    await store.open(lambda changes: None)
    try:
        [leased] = await store.write([WriteOp("put", "p", "a", data={}, ttl=1)])
        # The sweep read the lease at its first expiry; a renewal commits before its delete.
        [renewed] = await store.write([WriteOp("put", "p", "a", data={"again": True}, ttl=60)])
        with pytest.raises(Problem) as refused:
            await store.write([WriteOp("delete", "p", "a", lapsed_at=leased.expires_at)])
        assert refused.value.reason == "LeaseRenewed"
        row = await store.get("p", "a")
        assert row is not None and row.expires_at == renewed.expires_at
        # With the expiry it still has, the delete goes through, once.
        [gone] = await store.write([WriteOp("delete", "p", "a", lapsed_at=renewed.expires_at)])
        assert gone.type == "DELETED" and gone.expires_at == renewed.expires_at
        assert b'"expired":true' in event_json(gone, "DELETED")
        with pytest.raises(Problem):
            await store.write([WriteOp("delete", "p", "a", lapsed_at=renewed.expires_at)])
        assert store.revision == gone.revision
    finally:
        await store.close()


async def test_a_renewal_that_commits_first_keeps_the_sweep_from_deleting(tmp_path: Path) -> None:
    await renewal_wins_over_the_sweep(SQLiteStore(str(tmp_path / "w.db")))


async def test_postgres_a_renewal_that_commits_first_keeps_the_sweep_from_deleting(pg_url: str) -> None:
    await renewal_wins_over_the_sweep(PostgresStore(pg_url))


OLD_SQLITE_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('revision', 1), ('compacted', 0);
CREATE TABLE resources (collection TEXT NOT NULL, id TEXT NOT NULL, revision INTEGER NOT NULL,
    created_revision INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (collection, id)) WITHOUT ROWID;
CREATE TABLE log (revision INTEGER PRIMARY KEY, ts REAL NOT NULL, type TEXT NOT NULL,
    collection TEXT NOT NULL, id TEXT NOT NULL, created_revision INTEGER NOT NULL, data BLOB NOT NULL,
    prev BLOB);
INSERT INTO resources VALUES ('c', 'old', 1, 1, '{"n":1}');
INSERT INTO log VALUES (1, 0, 'ADDED', 'c', 'old', 1, '{"n":1}', NULL);
"""


async def test_a_sqlite_database_made_before_leases_gains_them_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SQLITE_TABLES)
    store = SQLiteStore(str(path))
    await store.open(lambda changes: None)
    try:
        row = await store.get("c", "old")
        assert row is not None and row.data == {"n": 1} and row.expires_at is None
        [leased] = await store.write([WriteOp("put", "c", "new", data={}, ttl=1)])
        new = await store.get("c", "new")
        assert new is not None and new.expires_at == leased.expires_at
        log = await store.read_log(0, store.revision, "c", None, 10)
        assert [(c.id, c.expires_at) for c in log.changes] == [("old", None), ("new", leased.expires_at)]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        plan = " ".join(
            str(row)
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT collection, id, expires_at FROM resources "
                "WHERE expires_at <= 1 ORDER BY expires_at LIMIT 10"
            )
        )
    assert "resources_by_expiry" in plan  # the sweep's range read, not a scan of the table


def test_postgres_schema_1_is_migrated_to_leases(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("CREATE SCHEMA watchroute")
            conn.execute("SET LOCAL search_path TO watchroute")
            conn.execute(schema.MIGRATIONS[0])
            conn.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
            conn.execute("INSERT INTO resources VALUES ('c', 'old', 1, 1, '{}')")
        assert schema.migrate(conn, "watchroute") == schema.SCHEMA_VERSION >= 2
        conn.execute("SET search_path TO watchroute")
        row = conn.execute("SELECT id, expires_at FROM resources").fetchone()
        assert row == ("old", None)
        index = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'resources'").fetchall()
        assert ("resources_by_expiry",) in index
