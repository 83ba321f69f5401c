"""The machine's Redis, for the tests of what instances share through it."""

from __future__ import annotations

import os

import pytest

REDIS_URL = os.environ.get("WATCHROUTE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_or_skip() -> None:
    """Skip the test, saying why, when Redis cannot be reached: it tests the shared path only."""
    import redis  # only these tests need the client

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} cannot be reached: {exc}")
