"""Change capture under failure and concurrency: exactly once, in commit order, whatever happens
to the capturing instance."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.capture_db import CaptureDb, all_events, capture_database, listed
from tests.support.server import ServerProcess

SETUP = "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); CREATE TABLE u (LIKE t INCLUDING ALL);"


def start(tmp_path: Path, name: str, db: CaptureDb) -> ServerProcess:
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    return ServerProcess(workdir, db.url, capture="t,u", capture_slot=db.slot).start()


def wait_for_copy(db: CaptureDb, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not db.sql("SELECT 1 FROM watchroute.positions WHERE name = 'capture'"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def expired(base: str, since: int) -> bool:
    r = httpx.get(f"{base}/v1/t", params={"watch": "true", "since": since, "timeout": 0.2})
    return r.status_code == 410 and r.json()["reason"] == "Expired"


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


def table_state(db: CaptureDb, table: str) -> dict[str, dict]:
    return {str(i): {"id": i, "v": v} for i, v in db.sql(f"SELECT id, v FROM {table}")}


def caught_up(proc: ServerProcess, db: CaptureDb, timeout: float = 20.0) -> int:
    """The revision at which both collections equal their tables."""
    base = proc.url
    deadline = time.monotonic() + timeout
    while True:
        t, rev_t = listed(base, "t")
        u, _ = listed(base, "u")
        if t == table_state(db, "t") and u == table_state(db, "u"):
            return rev_t
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.1)


def replay(events: list[dict]) -> dict[str, dict]:
    state: dict[str, dict] = {}
    for event in events:
        if event["type"] == "DELETED":
            state.pop(event["object"]["id"], None)
        else:
            state[event["object"]["id"]] = event["object"]["data"]
    return state


@pytest.mark.slow
def test_a_sigkilled_capturing_instance_is_taken_over_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    with capture_database(SETUP) as db:
        first = start(tmp_path, "a", db)
        second = start(tmp_path, "b", db)
        try:
            # Large transactions, the instance killed while it is applying them.
            with psycopg.connect(db.url, autocommit=True) as conn:
                for batch in range(4):
                    conn.execute(
                        "INSERT INTO t SELECT g, %s FROM generate_series(%s::int, %s::int) g",
                        (batch, batch * 5000 + 1, batch * 5000 + 5000),
                    )
                deadline = time.monotonic() + 10
                while listed(first.url, "t")[1] == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                first.kill()
                conn.execute("UPDATE t SET v = v + 10 WHERE id % 7 = 0")
                conn.execute("DELETE FROM t WHERE id % 11 = 0")
            rev = caught_up(second, db)
            got = all_events(second.url, "t", 0, rev)
            # 20,000 inserts, then the update and the delete: each change once, in commit order.
            updated = sum(1 for i in range(1, 20001) if i % 7 == 0)
            deleted = sum(1 for i in range(1, 20001) if i % 11 == 0)
            assert [e["revision"] for e in got] == list(range(1, rev + 1))
            assert len(got) == 20000 + updated + deleted
            assert [e["type"] for e in got[:20000]] == ["ADDED"] * 20000
            assert len({e["object"]["id"] for e in got[:20000]}) == 20000
            assert replay(got) == table_state(db, "t")
            # The killed instance comes back as a follower and serves the same log.
            first = start(tmp_path, "a", db)
            assert all_events(first.url, "t", 0, rev) == got
        finally:
            first.stop()
            second.stop()


def _transactions(db: CaptureDb, seed: int, rounds: int, committed: list[int]) -> None:
    """Random transactions on t and u; `committed` gets the row changes of each that commits."""
    rnd = random.Random(seed)
    with psycopg.connect(db.url, autocommit=True) as conn:
        for _ in range(rounds):
            changes = 0
            try:
                with conn.transaction():
                    for _ in range(rnd.randint(1, 4)):
                        table = rnd.choice("tu")
                        low = rnd.randint(1, 60)
                        kind = rnd.random()
                        if kind < 0.45:
                            cur = conn.execute(
                                f"INSERT INTO {table} SELECT g, %s FROM generate_series(%s::int, %s::int) g "
                                "ON CONFLICT DO NOTHING",
                                (rnd.randint(0, 99), low, low + rnd.randint(0, 3)),
                            )
                        elif kind < 0.8:
                            cur = conn.execute(
                                f"UPDATE {table} SET v = v + 1 WHERE id BETWEEN %s AND %s", (low, low + 2)
                            )
                        else:
                            cur = conn.execute(
                                f"DELETE FROM {table} WHERE id BETWEEN %s AND %s", (low, low + 1)
                            )
                        changes += cur.rowcount
                    if rnd.random() < 0.2:
                        raise _Rollback
                committed.append(changes)
            except _Rollback:
                pass
            except psycopg.errors.DeadlockDetected:
                pass  # rolled back by PostgreSQL: none of it happened


class _Rollback(Exception):
    pass


def _watch_cutting(base: str, collection: str, seed: int, stop: threading.Event, out: list[dict]) -> None:
    """Every event of `collection`, the stream cut after a random number of events and resumed
    from the last revision seen."""
    rnd = random.Random(seed)
    resume = 0
    while True:
        cut = rnd.randint(1, 15)
        params: dict[str, Any] = {"watch": "true", "since": resume, "heartbeat": 1, "timeout": 1}
        seen = 0
        with httpx.stream("GET", f"{base}/v1/{collection}", params=params, timeout=10) as r:
            for line in r.iter_lines():
                event = json.loads(line)
                resume = event["revision"]
                if event["type"] != "BOOKMARK":
                    out.append(event)
                    seen += 1
                    if seen == cut:
                        break
        if stop.is_set() and seen < cut:  # a whole quiet stream after the writers ended
            return


def test_random_transactions_reach_every_cut_and_resumed_watcher_exactly(tmp_path: Path) -> None:
    with capture_database(SETUP) as db:
        proc = start(tmp_path, "a", db)
        try:
            # From the end of the copy on, each row change is an event (before it, the copy
            # holds the rows' states, not their changes).
            assert wait_for_copy(db), proc.log()
            committed: list[int] = []
            writers = [
                threading.Thread(target=_transactions, args=(db, seed, 40, committed)) for seed in range(3)
            ]
            stop = threading.Event()
            seen: dict[tuple[str, int], list[dict]] = {(c, s): [] for c in "tu" for s in range(2)}
            watchers = [
                threading.Thread(target=_watch_cutting, args=(proc.url, c, 10 + s, stop, out))
                for (c, s), out in seen.items()
            ]
            for thread in writers + watchers:
                thread.start()
            for thread in writers:
                thread.join()
            caught_up(proc, db)
            stop.set()
            for thread in watchers:
                thread.join(timeout=30)
            total = 0
            for collection in "tu":
                got = [seen[(collection, s)] for s in range(2)]
                assert got[0] == got[1]  # both watchers, cut at different places, got the same
                revisions = [e["revision"] for e in got[0]]
                assert revisions == sorted(set(revisions))
                assert replay(got[0]) == table_state(db, collection) == listed(proc.url, collection)[0]
                total += len(got[0])
            assert total == sum(committed)  # one event per committed row change, none for a rollback
        finally:
            proc.stop()


def test_a_lost_slot_is_made_again_with_a_new_copy_that_leaves_nothing_stale(tmp_path: Path) -> None:
    with capture_database(SETUP) as db:
        db.sql("INSERT INTO t SELECT g, 0 FROM generate_series(1, 50) g")
        proc = start(tmp_path, "a", db)
        try:
            before = caught_up(proc, db)
        finally:
            proc.stop()
        # As a failover to a standby without the slot would: gone, and changes made meanwhile.
        from tests.support.capture_db import drop_slot

        drop_slot(db.slot)
        db.sql("DELETE FROM t WHERE id <= 10; UPDATE t SET v = 7 WHERE id > 40; INSERT INTO t VALUES (99, 1)")
        proc = start(tmp_path, "a", db)
        try:
            after = caught_up(proc, db)
            assert after > before
            # A watcher from before the loss ends at the tables' state: the new copy's changes
            # bring every row to it, and delete what the copy did not find.
            # A new epoch: a watch from before it is refused, so its client relists.
            assert wait_for(lambda: expired(proc.url, before)), proc.log()
            assert listed(proc.url, "t")[0] == table_state(db, "t")
            # The new copy deleted what the table no longer has.
            deleted = db.sql(
                "SELECT id FROM watchroute.log WHERE collection = 't' AND type = 'DELETED' AND revision > %s",
                (before,),
            )
            assert {rid for (rid,) in deleted} == {str(i) for i in range(1, 11)}
        finally:
            proc.stop()


def test_a_slot_lost_while_capturing_ends_the_watches_and_a_resume_from_before_is_410(tmp_path: Path) -> None:
    with capture_database(SETUP) as db:
        db.sql("INSERT INTO t SELECT g, 0 FROM generate_series(1, 5) g")
        proc = start(tmp_path, "a", db)
        try:
            before = caught_up(proc, db)
            ended = threading.Event()
            seen: list[dict] = []

            def watch() -> None:
                params: dict[str, str | int | float] = {
                    "watch": "true",
                    "since": before,
                    "heartbeat": 1,
                    "timeout": 30,
                }
                with httpx.stream("GET", f"{proc.url}/v1/t", params=params, timeout=40) as r:
                    seen.extend(json.loads(line) for line in r.iter_lines())
                ended.set()

            watcher = threading.Thread(target=watch)
            watcher.start()
            from tests.support.capture_db import drop_slot

            drop_slot(db.slot)  # as PostgreSQL does to a slot past max_slot_wal_keep_size
            db.sql("UPDATE t SET v = 1 WHERE id = 1")
            assert ended.wait(15), "the watch of the captured collection did not end"
            watcher.join()
            resume = max([before] + [e["revision"] for e in seen])
            assert wait_for(lambda: expired(proc.url, resume)), proc.log()
            assert caught_up(proc, db) > before  # the new copy, then the stream again
            db.sql("UPDATE t SET v = 2 WHERE id = 2")
            assert caught_up(proc, db)
        finally:
            proc.stop()
