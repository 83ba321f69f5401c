"""Change capture across a crash of PostgreSQL itself, on a cluster of the test's own
(tests/private_postgres.py): nothing lost, nothing given a second revision."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psycopg

from tests.support.capture_db import all_events, listed
from tests.support.private_postgres import private_postgres, wait_until_up
from tests.support.server import ServerProcess


def test_a_postgresql_crash_while_capturing_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    with private_postgres() as cluster:
        url = cluster.url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
        proc = ServerProcess(tmp_path, url, capture="t").start()
        try:
            stop = threading.Event()
            next_id = [0]

            def write() -> None:
                # Ten rows a transaction, until told to stop; a transaction cut by the crash
                # may or may not have committed: the table says which.
                while not stop.is_set():
                    try:
                        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
                            while not stop.is_set():
                                first = next_id[0] + 1
                                next_id[0] += 10
                                conn.execute(
                                    "INSERT INTO t SELECT g, 0 FROM generate_series(%s::int, %s::int) g",
                                    (first, first + 9),
                                )
                                time.sleep(0.005)  # a few hundred transactions a second
                    except psycopg.Error:
                        time.sleep(0.1)

            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(1.5)
            cluster.pg_ctl("restart", "immediate")  # a crash: no shutdown checkpoint
            wait_until_up(url)
            time.sleep(1.5)
            stop.set()
            writer.join()
            with psycopg.connect(url, autocommit=True) as conn:
                rows = {str(i) for (i,) in conn.execute("SELECT id FROM t")}
            deadline = time.monotonic() + 30
            while set(listed(proc.url, "t")[0]) != rows:
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
            revision = listed(proc.url, "t")[1]
            got = all_events(proc.url, "t", 0, revision)
            ids = [e["object"]["id"] for e in got]
            assert len(ids) == len(set(ids)) == len(rows)  # each row once
            assert set(ids) == rows
            assert [e["revision"] for e in got] == list(range(1, revision + 1))
        finally:
            proc.stop()


def test_a_slot_invalidated_past_max_slot_wal_keep_size_starts_a_new_epoch(tmp_path: Path) -> None:
    with private_postgres(
        " -c max_slot_wal_keep_size=1MB -c max_wal_size=32MB -c min_wal_size=32MB"
    ) as cluster:
        url = cluster.url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
            conn.execute("INSERT INTO t SELECT g, 0 FROM generate_series(1, 10) g")
        proc = ServerProcess(tmp_path / "a", url, capture="t")
        proc.workdir.mkdir()
        proc.start()
        deadline = time.monotonic() + 20
        while len(listed(proc.url, "t")[0]) < 10:
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        before = listed(proc.url, "t")[1]
        proc.stop()
        # Nobody reads the slot while far more WAL than it may keep is written.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM t WHERE id <= 3")
            conn.execute("CREATE TABLE filler (pad text)")
            for _ in range(4):
                conn.execute("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)")
                conn.execute("SELECT pg_switch_wal()")
                conn.execute("CHECKPOINT")
            (status,) = conn.execute("SELECT wal_status FROM pg_replication_slots").fetchone()  # type: ignore[misc]
            assert status == "lost"
        proc = ServerProcess(tmp_path / "b", url, capture="t")
        proc.workdir.mkdir()
        proc.start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                rows = {str(i) for (i,) in conn.execute("SELECT id FROM t")}
            deadline = time.monotonic() + 20
            while True:
                r = httpx.get(f"{proc.url}/v1/t", params={"watch": "true", "since": before, "timeout": 0.2})
                if set(listed(proc.url, "t")[0]) == rows and r.status_code == 410:
                    break
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
            assert r.json()["reason"] == "Expired"
            with psycopg.connect(url, autocommit=True) as conn:
                (status,) = conn.execute("SELECT wal_status FROM pg_replication_slots").fetchone()  # type: ignore[misc]
            assert status == "reserved"  # made again
        finally:
            proc.stop()
