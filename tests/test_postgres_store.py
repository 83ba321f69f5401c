"""The PostgreSQL store's own concerns: its schema, API keys kept beside the data."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from watchroute.store.postgres import PostgresStore
from watchroute.store.postgres.schema import SCHEMA_VERSION

from .security_keys import apikey_cli, create_apikey
from .server import ServerProcess


def test_instances_starting_together_create_the_schema_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, "wr_together") for _ in range(6)]
    with ThreadPoolExecutor(len(stores)) as pool:
        versions = list(pool.map(lambda store: store.migrate(), stores))
    assert versions == [SCHEMA_VERSION] * len(stores)
    with psycopg.connect(pg_url) as conn:
        meta = dict(conn.execute("SELECT key, value FROM wr_together.meta").fetchall())
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
