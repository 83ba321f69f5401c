"""Rate limits and watch caps hold for `serve --workers N` as a whole, without Redis: the worker
processes count in shared memory, a worker's own counts end with it, and nothing is let through
twice when processes race for the last place."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.workers import connections_by_worker, worker_pids
from watchroute.security.limits import Rate
from watchroute.security.shared_limits import WorkerLimits

pytestmark = pytest.mark.timeout(60)


def in_processes(count: int, work: Callable[[int], int]) -> list[int]:
    """Run work(i) in `count` forked processes, released together; what each returned."""
    gate_out, gate_in = os.pipe()
    results_out, results_in = os.pipe()
    children = []
    for i in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                os.read(gate_out, 1)
                os.write(results_in, struct.pack("=ii", i, work(i)))
            finally:
                os._exit(0)
        children.append(pid)
    os.write(gate_in, b"x" * count)
    for pid in children:
        os.waitpid(pid, 0)
    results = dict(struct.iter_unpack("=ii", os.read(results_out, 8 * count)))
    for fd in (gate_out, gate_in, results_out, results_in):
        os.close(fd)
    return [results[i] for i in range(count)]


def lock_is_free(region: WorkerLimits) -> bool:
    """Whether another process could take the region's lock now."""
    return in_processes(1, lambda _: _try_lock(region))[0] == 0


def _try_lock(region: WorkerLimits) -> int:
    try:
        fcntl.lockf(region._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 1
    return 0


def test_worker_processes_take_from_one_bucket() -> None:
    region = WorkerLimits(4)
    rate = Rate(capacity=3000.0, per_second=0.001)  # 3000 at once, then hardly any refill

    def take_many(_: int) -> int:
        buckets = region.buckets()
        return sum(buckets.take("rate_limit_ip:10.0.0.1", rate) == 0.0 for _ in range(1500))

    assert sum(in_processes(4, take_many)) == 3000  # not 4 x 1500 = 6000
    buckets = region.buckets()
    assert buckets.take("rate_limit_ip:10.0.0.1", rate) > 0  # empty for this process too...
    assert buckets.take("rate_limit_ip:10.0.0.2", rate) == 0.0  # ...and for that key only


def test_worker_processes_racing_for_the_last_watches_admit_exactly_the_cap() -> None:
    region = WorkerLimits(4)

    def open_many(worker: int) -> int:
        counts = region.watch_counts(worker, 200, 10**6)
        return sum(counts.try_add("alice" if n % 2 else None) is None for n in range(100))

    admitted = in_processes(4, open_many)
    assert sum(admitted) == 200
    # Worker 3 has gone: the places it held are free, and only those.
    region.clear_worker(3)
    counts = region.watch_counts(3, 200, 10**6)
    again = [counts.try_add(None) for _ in range(admitted[3] + 1)]
    assert again[:-1] == [None] * admitted[3]
    assert "most concurrent watches (200)" in (again[-1] or "")


def test_watches_opened_and_closed_by_racing_workers_never_exceed_the_cap() -> None:
    region = WorkerLimits(4)

    def churn(worker: int) -> int:
        counts = region.watch_counts(worker, 1, 10**6)
        over = 0
        for _ in range(5000):
            if counts.try_add("alice") is None:
                with region.locked():
                    open_now = sum(region.q[region.totals_at : region.totals_at + region.workers])
                over += open_now > 1
                counts.remove("alice")
        return over

    assert in_processes(4, churn) == [0, 0, 0, 0]


def test_identity_caps_sum_over_workers_and_a_gone_worker_counts_nothing() -> None:
    region = WorkerLimits(2)
    first, second = region.watch_counts(0, 5, 3), region.watch_counts(1, 5, 3)
    assert first.try_add("alice") is None and first.try_add("alice") is None
    assert second.try_add("alice") is None
    why = second.try_add("alice")
    assert why is not None and "at most 3" in why
    assert first.try_add("alice") is not None  # on either worker
    assert second.try_add("bob") is None and second.try_add("bob") is None
    assert "most concurrent watches (5)" in (first.try_add("carol") or "")

    first.remove("alice")
    assert second.try_add("alice") is None  # a place given back on one worker, taken on another
    assert first.refusal("dave") is not None  # total 5 again

    # The worker behind `second` dies: alice keeps her one watch on the first worker, bob none.
    region.clear_worker(1)
    second = region.watch_counts(1, 5, 3)
    again = [first.try_add("alice") for _ in range(3)]
    assert again[:2] == [None, None] and "at most 3" in (again[2] or "")
    assert second.try_add("bob") is None and second.try_add("bob") is None
    assert second.try_add("bob") is not None  # 5 in all


def test_an_identity_with_no_room_left_is_capped_by_its_worker_and_touches_no_other() -> None:
    region = WorkerLimits(2, identity_slots=8)  # one window: the ninth identity finds it full
    counts = region.watch_counts(0, 100, 2)
    users = [f"user{i}" for i in range(9)]
    assert [counts.try_add(user) for user in users] == [None] * 9
    counts.remove("user8")  # the one counted here alone: the others keep theirs
    assert counts.try_add("user0") is None and counts.try_add("user0") is not None
    assert counts.try_add("user8") is None and counts.try_add("user8") is None
    assert "at most 2" in (counts.try_add("user8") or "")


def test_a_nested_section_holds_the_lock_until_the_outermost_ends() -> None:
    region = WorkerLimits(2)
    with region.locked():
        # A watcher's end may come inside another section (the garbage collector runs anywhere).
        region.watch_counts(0, 5, 5).remove("alice")
        assert not lock_is_free(region)
    assert lock_is_free(region)


# -- through the server ------------------------------------------------------------------------


class OpenWatches:
    def __init__(self, http: httpx.AsyncClient, stack: contextlib.AsyncExitStack, url: str) -> None:
        self.http, self.stack, self.url = http, stack, url

    async def open(self) -> int:
        """Open a watch on a connection of its own; its status (an admitted one stays open)."""
        request = self.http.build_request("GET", self.url + "/v1/caps", params={"watch": "true"})
        response = await self.http.send(request, stream=True)
        self.stack.push_async_callback(response.aclose)
        if response.status_code != 200:
            await response.aclose()
        return response.status_code


@contextlib.asynccontextmanager
async def open_watches(url: str) -> Any:
    async with contextlib.AsyncExitStack() as stack:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10, limits=limits))
        yield OpenWatches(http, stack, url)


async def test_two_workers_hold_one_watch_cap(make_server: Any) -> None:
    server = make_server(workers=2, max_watches=4)
    async with open_watches(server.url) as watches:
        # Twenty connections, so that the kernel all but surely spreads them over both workers
        # (all on one: a chance of 2 in a million); apart, the workers would admit up to 8.
        statuses = [await watches.open() for _ in range(20)]
        assert statuses.count(200) == 4 and statuses.count(429) == 16, statuses
        held = connections_by_worker(server.pid, server.port)
        assert sum(held.values()) == 4, held


async def test_two_workers_hold_one_rate_limit(make_server: Any) -> None:
    # The test is its own proxy, so that it can name a client address of its own (the server's
    # start-up probe took a token from 127.0.0.1's bucket).
    server = make_server(workers=2, rate_limit_ip="6/m", forwarded_allow_ips="127.0.0.1")
    statuses = []
    for _ in range(24):
        # A connection per request, so that both workers answer some (all by one: a chance of 1
        # in 8 million).
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            forwarded = {"X-Forwarded-For": "203.0.113.9"}
            statuses.append((await c.get("/v1/limited", headers=forwarded)).status_code)
    assert statuses == [200] * 6 + [429] * 18


async def test_the_watches_of_a_killed_worker_stop_counting(make_server: Any) -> None:
    server = make_server(workers=2, max_watches=6)
    async with open_watches(server.url) as watches:
        assert [await watches.open() for _ in range(6)] == [200] * 6
        held = connections_by_worker(server.pid, server.port)
        victim = max(held, key=held.__getitem__)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while len(worker_pids(server.pid)) != 2 or victim in worker_pids(server.pid):
            assert time.monotonic() < deadline, "no worker took the killed one's place"
            await asyncio.sleep(0.1)
        # Connections to the replacement wait in its socket's queue until it has cleared the
        # counts of the worker before it.
        statuses = [await watches.open() for _ in range(held[victim] + 4)]
        assert statuses.count(200) == held[victim], (held, statuses)
