"""Change capture: PostgreSQL tables an application writes, served as collections from the WAL.

Each test's database is its own, and its replication slot is dropped after it, even on failure
(tests/capture_db.py); the module ends by checking that no slot of its own is left."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.capture_db import CaptureDb, all_events, capture_database
from tests.support.server import ServerProcess
from watchroute.capture import tables, values

SETUP = """
CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric, score float8, paid boolean,
    tags text[], grid int[], at timestamptz, day date, doc jsonb, raw bytea);
CREATE SCHEMA sales;
CREATE TABLE sales.lines (region text, n int, qty int, PRIMARY KEY (region, n));
CREATE TABLE docs (id int PRIMARY KEY, body text, title text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO orders VALUES (1, 'new', 12.50, 0.5, true, '{a,"b c",NULL}', '{{1,2},{3,4}}',
    '2024-01-02 03:04:05.25+02', '2024-01-02', '{"x": [1, {"y": null}]}', '\\x0102ff');
INSERT INTO sales.lines VALUES ('eu west', 1, 5);
"""
ROW_ONE = (
    "'new', 12.50, 0.5, true, '{a,\"b c\",NULL}', '{{1,2},{3,4}}', '2024-01-02 03:04:05.25+02', "
    "'2024-01-02', '{\"x\": [1, {\"y\": null}]}', '\\x0102ff'"
)
CAPTURED = "orders,sales.lines,docs"


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def revision(base: str) -> int:
    return httpx.get(f"{base}/v1/orders").json()["revision"]


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CaptureDb, str]]:
    with capture_database(SETUP) as db:
        proc = ServerProcess(
            tmp_path_factory.mktemp("capture"), db.url, capture=CAPTURED, capture_slot=db.slot
        ).start()
        try:
            assert wait_for(lambda: httpx.get(f"{proc.url}/v1/orders/1").status_code == 200), proc.log()
            yield db, proc.url
        finally:
            proc.stop()


# -- the mapping, without a database -------------------------------------------------------


def test_array_literals_nest_quote_and_hold_nulls() -> None:
    assert values.parse_array('{1,NULL,"a,b","x\\"y"}', str) == ["1", None, "a,b", 'x"y']
    assert values.parse_array("{{1,2},{3,4}}", int) == [[1, 2], [3, 4]]
    assert values.parse_array("[0:1]={5,6}", int) == [5, 6]
    assert values.parse_array("{}", int) == []


def test_timestamps_are_iso_8601_and_odd_floats_strings() -> None:
    convert = values.scalar(1184)
    assert convert("2024-01-02 03:04:05.25+00") == "2024-01-02T03:04:05.25+00:00"
    assert convert("infinity") == "infinity"
    assert values.scalar(701)("NaN") == "NaN"
    assert values.scalar(701)("1.5") == 1.5


def test_keys_become_valid_distinct_ids() -> None:
    assert tables.resource_id(["42"]) == "42"
    assert tables.resource_id(["eu", "7"]) == "eu:7"
    assert tables.resource_id(["a:b"]) != tables.resource_id(["a", "b"])
    assert tables.resource_id(["-5"]) == "x." + b"-5".hex()
    assert tables.parse("orders, sales.orders")[1].collection == "sales-orders"


# -- one server capturing the module's tables --------------------------------------------------


def test_rows_present_at_start_are_copied_with_the_documented_types(captured: tuple[CaptureDb, str]) -> None:
    _, base = captured
    one = httpx.get(f"{base}/v1/orders/1").json()["data"]
    assert one == {
        "id": 1,
        "status": "new",
        "total": "12.50",
        "score": 0.5,
        "paid": True,
        "tags": ["a", "b c", None],
        "grid": [[1, 2], [3, 4]],
        "at": "2024-01-02T01:04:05.25+00:00",
        "day": "2024-01-02",
        "doc": {"x": [1, {"y": None}]},
        "raw": "AQL/",
    }
    assert httpx.get(f"{base}/v1/sales-lines/eu%20west:1").status_code == 400  # not the id
    assert httpx.get(f"{base}/v1/sales-lines/x.{b'eu west'.hex()}:1").json()["data"] == {
        "region": "eu west",
        "n": 1,
        "qty": 5,
    }


def test_the_stream_maps_a_row_as_the_copy_does(captured: tuple[CaptureDb, str]) -> None:
    db, base = captured
    db.sql(f"INSERT INTO orders VALUES (2, {ROW_ONE})")
    two = wait_for(lambda: httpx.get(f"{base}/v1/orders/2").json().get("data"))
    one = httpx.get(f"{base}/v1/orders/1").json()["data"]
    assert two == {**one, "id": 2}


def test_a_transaction_takes_consecutive_revisions_and_a_rollback_none(
    captured: tuple[CaptureDb, str],
) -> None:
    db, base = captured
    since = revision(base)
    db.sql("BEGIN; INSERT INTO orders (id, status) VALUES (10, 'a'); ROLLBACK")
    db.sql(
        "BEGIN; INSERT INTO orders (id, status) VALUES (11, 'a'), (12, 'b'); "
        "UPDATE orders SET status = 'c' WHERE id = 11; DELETE FROM orders WHERE id = 12; COMMIT"
    )
    got = all_events(base, "orders", since, since + 4)
    assert [(e["type"], e["object"]["id"], e["revision"]) for e in got] == [
        ("ADDED", "11", since + 1),
        ("ADDED", "12", since + 2),
        ("MODIFIED", "11", since + 3),
        ("DELETED", "12", since + 4),
    ]
    assert got[2]["object"]["data"]["status"] == "c"
    assert httpx.get(f"{base}/v1/orders/10").status_code == 404


def test_rest_writes_to_a_captured_collection_are_refused(captured: tuple[CaptureDb, str]) -> None:
    _, base = captured
    before = revision(base)
    for method, path, body in [
        ("PUT", "/v1/orders/1", {"status": "x"}),
        ("POST", "/v1/orders", {"status": "x"}),
        ("PATCH", "/v1/orders/1", {"status": "x"}),
        ("DELETE", "/v1/orders/1", None),
        ("POST", "/v1/_batch", {"ops": [{"op": "put", "collection": "orders", "id": "1", "data": {}}]}),
    ]:
        r = httpx.request(method, base + path, json=body)
        assert r.status_code == 405, (method, path, r.text)
        assert r.json()["reason"] == "CapturedCollection"
    assert revision(base) == before
    assert httpx.get(f"{base}/v1/orders/1").json()["data"]["status"] == "new"


def test_an_update_that_leaves_a_toast_value_carries_the_whole_row(captured: tuple[CaptureDb, str]) -> None:
    db, base = captured
    body = "long text " * 2000  # stored out of line (STORAGE EXTERNAL): not sent when unchanged
    db.sql("INSERT INTO docs VALUES (1, %s, 'one')", (body,))
    since = wait_for(lambda: httpx.get(f"{base}/v1/docs/1").json().get("revision"))
    db.sql("UPDATE docs SET title = 'two' WHERE id = 1")
    [event] = all_events(base, "docs", since, since + 1)
    assert event["object"]["data"] == {"id": 1, "body": body, "title": "two"}
    assert list(event["object"]["data"]) == ["id", "body", "title"]  # in the table's column order


def test_a_row_larger_than_a_client_may_write_is_captured_whole(captured: tuple[CaptureDb, str]) -> None:
    # max_document_bytes (1 MiB here) bounds what clients send; a captured row is the table's.
    db, base = captured
    body = "0123456789" * 120_000
    db.sql("INSERT INTO docs VALUES (9, %s, 'big')", (body,))
    assert wait_for(lambda: httpx.get(f"{base}/v1/docs/9").status_code == 200)
    assert httpx.get(f"{base}/v1/docs/9").json()["data"]["body"] == body


def test_a_column_added_while_capturing_is_in_later_events(captured: tuple[CaptureDb, str]) -> None:
    db, base = captured
    since = revision(base)
    db.sql("ALTER TABLE sales.lines ADD COLUMN note text[] DEFAULT '{hi}'")
    db.sql("INSERT INTO sales.lines VALUES ('b', 2, 1, '{x,y}')")
    [event] = all_events(base, "sales-lines", since, since + 1)
    assert event["object"]["id"] == "b:2"
    assert event["object"]["data"] == {"region": "b", "n": 2, "qty": 1, "note": ["x", "y"]}


def test_a_key_changed_by_an_update_moves_the_resource(captured: tuple[CaptureDb, str]) -> None:
    db, base = captured
    db.sql("INSERT INTO orders (id, status) VALUES (30, 'k')")
    since = wait_for(lambda: httpx.get(f"{base}/v1/orders/30").json().get("revision"))
    db.sql("UPDATE orders SET id = 31 WHERE id = 30")
    got = all_events(base, "orders", since, since + 2)
    assert [(e["type"], e["object"]["id"]) for e in got] == [("DELETED", "30"), ("ADDED", "31")]


def test_a_truncate_deletes_every_resource_of_the_collection(captured: tuple[CaptureDb, str]) -> None:
    db, base = captured
    db.sql("INSERT INTO docs VALUES (2, 'b', 'two'), (3, 'c', 'three')")
    assert wait_for(lambda: httpx.get(f"{base}/v1/docs/3").status_code == 200)
    present = {item["id"] for item in httpx.get(f"{base}/v1/docs").json()["items"]}
    since = revision(base)
    # With a row added and one deleted earlier in the same transaction.
    db.sql(
        "BEGIN; INSERT INTO docs VALUES (4, 'd', 'x'); DELETE FROM docs WHERE id = 2; TRUNCATE docs; COMMIT"
    )
    left = (present - {"2"}) | {"4"}
    got = all_events(base, "docs", since, since + 2 + len(left))
    assert [(e["type"], e["object"]["id"]) for e in got[:2]] == [("ADDED", "4"), ("DELETED", "2")]
    assert [e["type"] for e in got[2:]] == ["DELETED"] * len(left)
    assert {e["object"]["id"] for e in got[2:]} == left
    assert httpx.get(f"{base}/v1/docs").json()["items"] == []


# -- servers of their own ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "spec", "says"),
    [
        ("CREATE TABLE loose (a int)", "loose", "ADD PRIMARY KEY"),
        ("", "nowhere", "no such table"),
        ("", "Bad.Name", "lower case"),
    ],
)
def test_a_table_that_cannot_be_captured_stops_the_server_saying_what_to_run(
    tmp_path: Path, setup: str, spec: str, says: str
) -> None:
    with capture_database(setup) as db:
        proc = ServerProcess(tmp_path, db.url, capture=spec, capture_slot=db.slot)
        with pytest.raises(RuntimeError, match=says):
            proc.start()
        proc.stop()
        assert proc.proc is not None and proc.proc.returncode == 1
        # Refused before anything was made: no publication, no slot, no schema of ours.
        assert db.sql("SELECT 1 FROM pg_publication") == []
        assert db.sql("SELECT 1 FROM pg_namespace WHERE nspname = 'watchroute'") == []


def test_readyz_and_metrics_show_the_slot_and_its_lag(captured: tuple[CaptureDb, str]) -> None:
    db, base = captured

    def reported() -> dict:
        status = httpx.get(f"{base}/readyz").json()["capture"]
        return status if status["exists"] else {}

    status = wait_for(reported)
    assert status["slot"] == db.slot and status["leader"] is True and status["wal_status"] == "reserved"
    assert isinstance(status["lag_bytes"], int) and status["lag_bytes"] >= 0
    assert "watchroute_capture_slot_lag_bytes" in httpx.get(f"{base}/metrics").text


def test_capture_on_the_sqlite_store_stops_the_server_saying_what_it_needs(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, capture="orders")
    with pytest.raises(RuntimeError, match="needs the PostgreSQL store"):
        proc.start()
    proc.stop()


def test_a_role_that_may_not_replicate_or_read_stops_the_server_saying_what_to_run(tmp_path: Path) -> None:
    import uuid

    role = "wr_test_role_" + uuid.uuid4().hex[:8]
    with capture_database("CREATE TABLE k (id int PRIMARY KEY)") as db:
        db.sql(f"CREATE ROLE {role} LOGIN")
        try:
            url = db.url.replace("postgres@", f"{role}@")
            proc = ServerProcess(tmp_path / "a", url, capture="k", capture_slot=db.slot)
            proc.workdir.mkdir()
            with pytest.raises(RuntimeError, match=f"ALTER ROLE {role} REPLICATION"):
                proc.start()
            proc.stop()
            db.sql(f"ALTER ROLE {role} REPLICATION")
            proc = ServerProcess(tmp_path / "b", url, capture="k", capture_slot=db.slot)
            proc.workdir.mkdir()
            with pytest.raises(RuntimeError, match="GRANT SELECT ON"):
                proc.start()
            proc.stop()
        finally:
            db.sql(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_capture_drop_removes_the_slot_and_publication(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    with capture_database("CREATE TABLE k (id int PRIMARY KEY)") as db:
        proc = ServerProcess(tmp_path, db.url, capture="k", capture_slot=db.slot).start()
        env = {**os.environ, "WATCHROUTE_DATABASE": db.url, "WATCHROUTE_CAPTURE_SLOT": db.slot}
        command = [sys.executable, "-m", "watchroute", "capture", "drop"]
        try:
            assert wait_for(
                lambda: db.sql("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (db.slot,))
            )
            refused = subprocess.run(command, env=env, capture_output=True, text=True)
            assert refused.returncode == 1 and "stop the capturing servers" in refused.stderr
        finally:
            proc.stop()
        wait_for(
            lambda: db.sql(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND NOT active", (db.slot,)
            )
        )
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert db.sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (db.slot,)) == []
        assert db.sql("SELECT 1 FROM pg_publication WHERE pubname = %s", (db.slot,)) == []
        assert db.sql("SELECT 1 FROM watchroute.positions WHERE name = 'capture'") == []


def test_writes_to_other_tables_do_not_leave_the_slot_holding_their_wal(
    captured: tuple[CaptureDb, str],
) -> None:
    db, _ = captured
    db.sql("CREATE TABLE IF NOT EXISTS elsewhere (id int PRIMARY KEY, pad text)")
    db.sql(
        "INSERT INTO elsewhere SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"
    )  # ~6 MB of WAL

    def lag() -> int:
        (value,) = db.sql(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (db.slot,),
        )[0]
        return value

    # Confirmed past the other table's WAL once the capture is idle (within a few feedbacks).
    assert wait_for(lambda: lag() < 1_000_000, timeout=10), lag()
