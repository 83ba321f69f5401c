"""Three instances on one PostgreSQL database behind nginx, with deploy/nginx.conf as shipped
(only its ports changed): writers and watchers through nginx, one instance SIGKILLed and
restarted mid-run. Skipped, saying why, where nginx is not installed."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from tests.support import REPO
from tests.support.instances import watch_across, write_for
from tests.support.server import ServerProcess, free_port

CONFIG = REPO / "deploy" / "nginx.conf"


@pytest.fixture
def balanced(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, list[ServerProcess]]]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    procs = []
    for n in range(3):
        (tmp_path / f"i{n}").mkdir()
        procs.append(ServerProcess(tmp_path / f"i{n}", database=pg_url))
    port = free_port()
    config = CONFIG.read_text().replace("listen 8000;", f"listen 127.0.0.1:{port};")
    for n, proc in enumerate(procs):
        config = config.replace(f"127.0.0.1:800{n + 1} ", f"127.0.0.1:{proc.port} ")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(config)
    balancer = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stderr=open(prefix / "error.log", "wb"),  # noqa: SIM115 - owned by the process
    )
    try:
        for proc in procs:
            proc.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (prefix / "error.log").read_text()
            time.sleep(0.05)
        yield url, procs
    finally:
        balancer.terminate()
        balancer.wait(10)
        for proc in procs:
            proc.stop()


async def watch_ws(url: str, coll: str, since: int, until: asyncio.Future[int]) -> list[tuple]:
    """The same as watch_across, over WebSocket: reconnect from the last revision when closed."""
    got: list[tuple] = []
    resume = since
    while not (until.done() and resume >= until.result()):
        try:
            ws_url = url.replace("http://", "ws://") + f"/v1/{coll}?since={resume}&heartbeat=1"
            async with connect(ws_url, open_timeout=5) as ws:
                while not (until.done() and resume >= until.result()):
                    event = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
                    resume = event["revision"]
                    if event["type"] != "BOOKMARK":
                        got.append((event["revision"], event["object"]["id"]))
        except (OSError, TimeoutError, WebSocketException):
            await asyncio.sleep(0.05)
    return got


def test_through_nginx_a_sigkilled_instance_loses_nothing_and_watchers_get_exactly_the_log(
    balanced: tuple[str, list[ServerProcess]], pg_url: str
) -> None:
    url, procs = balanced

    async def run() -> tuple[list[tuple], list[tuple], list[list[tuple]]]:
        acks: list[tuple] = []
        until: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        watchers = [asyncio.create_task(watch_across([url], "k", 0, until)) for _ in range(2)]
        watchers += [asyncio.create_task(watch_ws(url, "k", 0, until)) for _ in range(2)]
        writers = [asyncio.create_task(write_for(url, "k", f"w{i}-", 3.0, acks)) for i in range(3)]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(procs[1].stop, signal.SIGKILL)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(procs[1].start)
        await asyncio.gather(*writers)
        with psycopg.connect(pg_url) as conn:
            log = conn.execute("SELECT revision, id FROM watchroute.log ORDER BY revision").fetchall()
        until.set_result(log[-1][0])
        return acks, log, await asyncio.wait_for(asyncio.gather(*watchers), 30)

    acks, log, watched = asyncio.run(run())
    assert [revision for revision, _ in log] == list(range(1, len(log) + 1))
    assert len(log) > 50
    assert set(acks) <= {tuple(row) for row in log}
    for got in watched:
        assert got == [tuple(row) for row in log]
