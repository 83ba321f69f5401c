"""A database of a change capture test's own, with the tables it captures: its replication slot
is dropped after, even when the test failed (a forgotten slot keeps WAL for ever), then the
database. And reading a captured collection back: listed whole, or its events watched."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.postgres import _admin, fresh_database


@dataclass
class CaptureDb:
    url: str
    slot: str

    def sql(self, statement: str, params: tuple | None = None) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []


def drop_slot(slot: str) -> None:
    with _admin() as conn:
        for _ in range(100):
            row = conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is None:
                return
            if row[0] is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                time.sleep(0.05)
                continue
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            except Exception:
                time.sleep(0.05)
    raise AssertionError(f"the replication slot {slot} could not be dropped")


@contextmanager
def capture_database(setup: str) -> Iterator[CaptureDb]:
    slot = "wr_test_" + uuid.uuid4().hex[:12]
    with fresh_database() as url:
        db = CaptureDb(url, slot)
        if setup:
            db.sql(setup)
        try:
            yield db
        finally:
            drop_slot(slot)


def listed(base: str, collection: str) -> tuple[dict[str, dict], int]:
    items: dict[str, dict] = {}
    params: dict[str, Any] = {"limit": 5000}
    while True:
        body = httpx.get(f"{base}/v1/{collection}", params=params).json()
        items.update((item["id"], item["data"]) for item in body["items"])
        if not body["continue"]:
            return items, body["revision"]
        params["continue"] = body["continue"]


def all_events(base: str, collection: str, since: int, until: int, timeout: float = 20.0) -> list[dict]:
    """Every change event of `collection` after `since`, up to revision `until`, on one watch."""
    got: list[dict] = []
    params: dict[str, str | int | float] = {
        "watch": "true",
        "since": since,
        "heartbeat": 1,
        "timeout": timeout,
    }
    with httpx.stream("GET", f"{base}/v1/{collection}", params=params, timeout=timeout + 10) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            event = json.loads(line)
            if event["type"] != "BOOKMARK":
                got.append(event)
            if event["revision"] >= until:
                break
    return got
