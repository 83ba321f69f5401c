"""PostgreSQL itself restarted while three instances take writes and serve watches.

The server restarted is one of the test's own (tests/support/postgres.py), so that the other
tests, running at the same time on the machine's server, feel nothing of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.instances import watch_across
from tests.support.postgres import PrivateCluster
from tests.support.server import ServerProcess


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with PrivateCluster() as cluster:
        yield cluster


@pytest.fixture
def instances(cluster: PrivateCluster, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Three instances on the cluster's database, stopped before the cluster is."""
    procs = []
    for n in range(3):
        (tmp_path / f"i{n}").mkdir()
        procs.append(ServerProcess(tmp_path / f"i{n}", database=cluster.url))
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


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
    cluster: PrivateCluster, instances: list[ServerProcess]
) -> None:
    urls = [proc.url for proc in instances]

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
        restarted = await asyncio.to_thread(cluster.pg_ctl, "restart")
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
        with psycopg.connect(cluster.url) as conn:
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
