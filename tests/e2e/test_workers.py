"""Several processes on one SQLite file: `--workers N`, and stores that share a file.

Every process must hand its watchers every commit, its own and the others', once and in revision
order; a worker killed with -9 is replaced and loses no acknowledged write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.storm import storm, watch_all
from tests.support.workers import connections_by_worker, worker_pids
from watchroute.core.change import Change
from watchroute.core.hub import Hub
from watchroute.core.problems import Problem
from watchroute.core.tailer import Tailer
from watchroute.core.watcher import Watcher
from watchroute.core.window import Window
from watchroute.server.workers import die_with_parent
from watchroute.store import WriteOp
from watchroute.store.peers import PEERS_SCHEMA, Peers
from watchroute.store.sqlite.engine import SQLiteStore


def noting_revisions(into: list[int]) -> Callable[[list[Change]], None]:
    """A commit listener that notes each change's revision in `into`."""
    return lambda changes: into.extend(c.revision for c in changes)


async def test_watchers_of_every_worker_see_every_commit_in_revision_order(make_server, coll):
    server = make_server(workers=2)
    assert len(worker_pids(server.pid)) == 2
    writers, writes_each, watchers = 8, 40, 12
    total = writers * writes_each

    # Watch first: the watchers must be told of commits as they come, not find them in the log.
    opened = [asyncio.Event() for _ in range(watchers)]
    streams = [asyncio.create_task(watch_all(server.url, coll, 0, total, event)) for event in opened]
    for event in opened:
        await event.wait()
    # Each stream is its own connection; the kernel spreads connections over both workers.
    spread = connections_by_worker(server.pid, server.port)
    assert all(count > 0 for count in spread.values()), spread

    acked: dict[int, dict] = {}

    async def writer(n: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            for i in range(writes_each):
                # A connection per write, so that both workers take writes.
                fresh = {"Connection": "close"}
                r = await c.put(f"/v1/{coll}/w{n}-{i % 5}", json={"n": n, "i": i}, headers=fresh)
                assert r.status_code in (200, 201), r.text
                acked[r.json()["revision"]] = r.json()

    await asyncio.gather(*(writer(n) for n in range(writers)))
    assert sorted(acked) == list(range(1, total + 1))  # one gap-free sequence across the workers
    for events in await asyncio.gather(*streams):
        assert [e["revision"] for e in events] == list(range(1, total + 1))
        assert all(e["object"]["data"] == acked[e["revision"]]["data"] for e in events)


async def test_a_killed_worker_is_replaced_and_no_acknowledged_write_is_lost(make_server, coll):
    server = make_server(workers=2)
    first = worker_pids(server.pid)
    acked: dict[int, dict] = {}
    stop = asyncio.Event()

    async def write_for_a_while() -> None:
        # Writers that reconnect after the worker under them dies: the port stays served.
        while not stop.is_set():
            await storm(server.url, coll, acked, stop)

    writing = asyncio.create_task(write_for_a_while())
    await asyncio.sleep(1.0)
    os.kill(first[0], signal.SIGKILL)
    killed_at = len(acked)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = worker_pids(server.pid)
        if len(now) == 2 and first[0] not in now:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"no worker took the place of the killed one: {worker_pids(server.pid)}")
    await asyncio.sleep(1.0)  # writes reach the new worker too
    stop.set()
    await writing
    assert len(acked) > killed_at  # the server kept taking writes

    latest = max(acked)
    events = await watch_all(server.url, coll, 0, latest)
    seen = {e["revision"]: e for e in events}
    assert [e["revision"] for e in events] == sorted(seen)
    lost = [rev for rev in acked if rev not in seen]
    assert not lost, f"{len(lost)} acknowledged writes missing, e.g. {lost[:5]}"
    for rev, body in acked.items():
        assert seen[rev]["object"]["id"] == body["id"]
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/readyz").json()["revision"] >= latest


def _gone(pid: int) -> bool:
    try:
        # An orphan's new parent may be slow to reap it: a zombie serves nothing.
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_workers_die_with_a_parent_killed_with_minus_9(make_server):
    server = make_server(workers=2)
    workers = worker_pids(server.pid)
    assert len(workers) == 2
    server.kill()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_gone(pid) for pid in workers):
            time.sleep(0.05)
        assert all(_gone(pid) for pid in workers)
        assert _refuses_connections(server.port)
    finally:
        for pid in workers:  # orphans left by a failure are the test's to end
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_stops_when_the_pipe_from_its_parent_closes():
    """The fallback where the kernel sends no signal at a parent's death (not Linux): the
    worker's end of a pipe only the parent writes to reads end-of-file, and the worker stops
    as when the parent passes on a SIGTERM."""
    parent_alive, parent_write = os.pipe()
    child = os.fork()
    if child == 0:  # the worker; the parent here is the test itself, which lives on
        try:
            os.close(parent_write)
            signal.signal(signal.SIGTERM, lambda *_: os._exit(15))
            die_with_parent(os.getppid(), parent_alive)
            time.sleep(10)
        finally:
            os._exit(1)
    os.close(parent_alive)
    time.sleep(0.2)
    assert os.waitpid(child, os.WNOHANG) == (0, 0)  # alive while the writing end is open
    os.close(parent_write)
    deadline = time.monotonic() + 5
    while (status := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert status[0] == child and os.waitstatus_to_exitcode(status[1]) == 15


def _serve(port: int, tmp_path: Path, **settings: str) -> tuple[int, str]:
    """Start `watchroute serve` on `port`: its exit code and standard error."""
    env = dict(os.environ, WATCHROUTE_DATABASE=f"sqlite:///{tmp_path / 'other.db'}")
    env.update({f"WATCHROUTE_{k.upper()}": v for k, v in settings.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchroute", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:  # it started: stop it (and its workers) before failing
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        pytest.fail(f"a second server started on port {port}: {err}")
    return proc.returncode, err


def test_a_server_refuses_to_share_its_port_with_an_older_one(make_server, tmp_path: Path):
    old = make_server(workers=2)
    # Under SO_REUSEPORT alone the kernel would spread connections over both servers, and
    # the old one (no auth) would answer half of the requests the new one should refuse.
    code, err = _serve(old.port, tmp_path, workers="2", auth="jwt", jwt_secret="s" * 32)
    assert code == 2, err
    assert f"127.0.0.1:{old.port} is in use" in err
    assert len(worker_pids(old.pid)) == 2  # the old server is untouched
    with httpx.Client(base_url=old.url) as c:
        assert c.get("/healthz").status_code == 200


def test_a_server_will_not_start_on_a_port_something_else_listens_on(tmp_path: Path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        for workers in ("1", "2"):
            code, err = _serve(port, tmp_path, workers=workers)
            assert code == 2, err
            assert "is in use" in err


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path):
    from tests.support.server import ServerProcess

    (tmp_path / "taken").write_text("a file where the database's directory should be")
    server = ServerProcess(tmp_path, workers=2)
    server.database = f"sqlite:///{tmp_path / 'taken' / 'watchroute.db'}"
    with pytest.raises(RuntimeError, match="server exited"):
        server.start(timeout=20)
    assert server.proc is not None and server.proc.wait(10) != 0


# -- stores sharing one file, in one process ---------------------------------------------------


async def test_stores_on_one_file_hand_on_each_others_commits_in_order(tmp_path: Path):
    path = str(tmp_path / "shared.db")
    heard: list[list[int]] = [[], []]
    stores = [SQLiteStore(path), SQLiteStore(path)]
    for store, revisions in zip(stores, heard, strict=True):
        await store.open(noting_revisions(revisions))
    try:

        async def write(store: SQLiteStore, n: int) -> None:
            for i in range(50):
                ops = [WriteOp("put", "t", f"{n}-{i}-{k}", {"k": k}) for k in range(1 + i % 3)]
                await store.write(ops)

        await asyncio.gather(*(write(stores[n % 2], n) for n in range(6)))
        total = 6 * sum(1 + i % 3 for i in range(50))
        deadline = time.monotonic() + 5
        while any(len(revisions) < total for revisions in heard) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert heard[0] == list(range(1, total + 1))
        assert heard[1] == heard[0]
        assert stores[0].revision == stores[1].revision == total
    finally:
        for store in stores:
            await store.close()


class _CompactedLog:
    """A store whose log holds nothing older than `compacted`."""

    def __init__(self, compacted: int) -> None:
        self.compacted = compacted

    async def read_log(self, after: int, upto: int, collection: str, id: str | None, limit: int):
        if after < self.compacted:
            raise Problem(410, "Expired", f"revision {after} is older than the history horizon")
        raise AssertionError("read past the horizon")


def _change(revision: int) -> Change:
    return Change(revision, "ADDED", "t", f"r{revision}", revision, b'{"v":1}', None, 0.0)


async def test_revisions_compacted_before_they_were_read_end_a_watch_with_410():
    """An instance that fell behind its peers by more than the history horizon has lost
    changes: its caught-up watchers must hear 410 and relist, not skip them in silence."""
    window, hub = Window(100, 10), Hub()
    tailer = Tailer(window, hub)
    store = _CompactedLog(compacted=20)
    with Watcher(hub, window, store, "t", None, None, 10) as watcher:  # type: ignore[arg-type]
        parked = asyncio.create_task(watcher.next(10, 5.0))
        await asyncio.sleep(0.01)
        tailer.committed([_change(21), _change(22)])  # 11-20 were never read here
        with pytest.raises(Problem) as refused:
            await parked
    assert refused.value.status == 410
    assert window.revision == 22


def test_peers_wake_each_other_and_strike_a_peer_that_has_gone(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "peers.db", isolation_level=None)
    conn.executescript(PEERS_SCHEMA)
    writer, listener, gone = Peers(), Peers(), Peers()
    for peer in (writer, listener, gone):
        peer.join(conn, os.getpid(), time.time())
    writer.refresh(conn)
    assert sorted(writer.others) == sorted([listener.name, gone.name])

    writer.announce(None)
    assert listener.receive() == (0, True)  # a hello: look at who is there
    gone.close()  # its process has died, and its name with it
    writer.announce(7)
    writer.announce(9)
    assert listener.receive() == (9, False)
    assert writer.others == [listener.name]
    writer.strike_gone(conn)
    assert sorted(name for (name,) in conn.execute("SELECT name FROM peers")) == sorted(
        [writer.name, listener.name]
    )
    writer.close()
    listener.close()
