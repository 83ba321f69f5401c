"""Databases of the tests' own on the machine's PostgreSQL: each created fresh, dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

# The server the tests use, and a database on it to connect to while creating theirs.
ADMIN_URL = os.environ.get("WATCHROUTE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _admin():  # psycopg imported here: only the PostgreSQL tests need it
    import psycopg

    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL cannot be reached at {ADMIN_URL}: {exc}")


def url_of(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with whatever is still connected) after."""
    name = "watchroute_test_" + uuid.uuid4().hex[:12]
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_of(name)
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_connections_allowed(url: str, allowed: bool) -> None:
    """Cut a test database off (or let it back): new connections are refused and, when cut
    off, the open ones are ended: to its users the database is gone, while the server goes on
    serving everyone else's."""
    name = url.rpartition("/")[2]
    with _admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
