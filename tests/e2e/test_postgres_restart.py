"""PostgreSQL itself restarted while three instances take writes and serve watches.

This restarts the machine's PostgreSQL server, which every other test using it would feel:
it is marked `serial`, to run alone after the parallel run, and it always leaves the server
running, even when it fails. Skipped, saying why, where the server is not a local cluster this
process may restart.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.instances import watch_across
from tests.support.server import ServerProcess

pytestmark = pytest.mark.serial

CLUSTERS = Path("/etc/postgresql")


def _cluster() -> list[str]:
    """`pg_ctlcluster` and the version of the local cluster `main`, or a skip saying why not."""
    ctl = shutil.which("pg_ctlcluster")
    versions = sorted(p.name for p in CLUSTERS.iterdir()) if CLUSTERS.is_dir() else []
    if ctl is None or not versions:
        pytest.skip("no local PostgreSQL cluster to restart (pg_ctlcluster, /etc/postgresql)")
    return [ctl, "--skip-systemctl-redirect", versions[0], "main"]


def _ctl(cluster: list[str], action: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cluster, action], capture_output=True, text=True, timeout=120)


@pytest.fixture
def cluster() -> Iterator[list[str]]:
    cluster = _cluster()
    if _ctl(cluster, "status").returncode != 0:
        pytest.skip("the local PostgreSQL cluster is not running")
    try:
        yield cluster
    finally:
        # Whatever happened, the server is left running for everyone else.
        if _ctl(cluster, "status").returncode != 0:
            _ctl(cluster, "start")


async def write_until(url: str, prefix: str, stop: asyncio.Event, acks: list[tuple], refusals: list) -> None:
    """PUT new resources until `stop`; acknowledged ones go to `acks`, every other answer to
    `refusals` as (status, reason, Retry-After)."""
    n = 0
    async with httpx.AsyncClient(timeout=15) as c:
        while not stop.is_set():
            n += 1
            r = await c.put(f"{url}/v1/k/{prefix}{n}", json={"n": n})
            if r.status_code == 201:
                acks.append((r.json()["revision"], f"{prefix}{n}"))
            else:
                refusals.append((r.status_code, r.json().get("reason"), r.headers.get("Retry-After")))
                await asyncio.sleep(0.05)


def test_postgresql_restarted_under_load_refuses_writes_cleanly_loses_nothing_and_watchers_resume(
    cluster: list[str], trio: list[ServerProcess], pg_url: str
) -> None:
    urls = [proc.url for proc in trio]

    async def run() -> tuple[list[tuple], list, list[tuple], list[list[tuple]], float]:
        acks: list[tuple] = []
        refusals: list = []
        stop = asyncio.Event()
        until: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        watchers = [asyncio.create_task(watch_across(urls[i:] + urls[:i], "k", 0, until)) for i in range(3)]
        writers = [
            asyncio.create_task(write_until(url, f"w{i}-", stop, acks, refusals))
            for i, url in enumerate(urls)
        ]
        await asyncio.sleep(1.0)
        before = len(acks)
        restarted = await asyncio.to_thread(_ctl, cluster, "restart")
        assert restarted.returncode == 0, restarted.stderr
        back = time.monotonic()
        # Writes are taken again once the instances have reconnected on their own.
        while len(acks) < before + 30 or not refusals:
            assert time.monotonic() - back < 20, (len(acks), before, refusals[-3:])
            await asyncio.sleep(0.1)
        recovered = time.monotonic() - back
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*writers)
        with psycopg.connect(pg_url) as conn:
            log = conn.execute("SELECT revision, id FROM watchroute.log ORDER BY revision").fetchall()
        until.set_result(log[-1][0])
        return acks, refusals, log, await asyncio.wait_for(asyncio.gather(*watchers), 30), recovered

    acks, refusals, log, watched, recovered = asyncio.run(run())
    # Refused cleanly during the outage: 503 StoreUnavailable with Retry-After, nothing else.
    assert refusals
    assert {(status, reason) for status, reason, _ in refusals} == {(503, "StoreUnavailable")}
    assert all(int(after) >= 1 for _, _, after in refusals)
    assert recovered < 20
    # Nothing acknowledged lost, the log gap-free, every watcher ends with exactly it.
    assert [revision for revision, _ in log] == list(range(1, len(log) + 1))
    assert set(acks) <= {tuple(row) for row in log}
    for got in watched:
        assert got == [tuple(row) for row in log]
    # Every instance serves again, and says it is ready.
    for url in urls:
        assert httpx.get(url + "/readyz").status_code == 200
