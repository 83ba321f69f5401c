"""A process that fell behind the history horizon while it could not run: its watchers hear of
the lost revisions as soon as it runs again, on both stores, without a later write to show the
gap (the revisions' 410 comes from the log, as on every other instance)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"  # two processes on one file
    return str(request.getfixturevalue("pg_url"))


def compacted_past(proc: ServerProcess, revision: int) -> bool:
    """Whether `proc` answers a watch from `revision` with 410: the log no longer has the next."""
    r = httpx.get(f"{proc.url}/v1/h", params={"watch": "longpoll", "since": revision, "timeout": 0.1})
    return r.status_code == 410


def test_a_process_whose_whole_backlog_was_compacted_answers_410_without_waiting_for_a_write(
    database: str, tmp_path: Path
) -> None:
    """A process stopped while another commits and compacts everything past it: once it runs
    again its waiting watcher gets 410 from the log, without a later write to show the gap."""
    settings: dict[str, Any] = {"history_events": 0, "history_seconds": 0.5, "compaction_interval": 0.1}
    a, b = (ServerProcess(tmp_path / n, database=database, **settings) for n in ("a", "b"))
    for proc in (a, b):
        proc.workdir.mkdir()
        proc.start()
    try:
        assert httpx.put(f"{a.url}/v1/h/first", json={}).status_code == 201
        deadline = time.monotonic() + 10
        while httpx.get(f"{b.url}/v1/h/first").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer: list[httpx.Response] = []

        def wait_on_b() -> None:
            params: dict[str, str | int | float] = {"watch": "longpoll", "since": 1, "timeout": 30}
            answer.append(httpx.get(f"{b.url}/v1/h", params=params, timeout=60))

        waiting = threading.Thread(target=wait_on_b)
        waiting.start()
        time.sleep(0.5)  # parked on b
        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)
        try:
            for n in range(5):
                assert httpx.put(f"{a.url}/v1/h/{n}", json={}).status_code == 201
            while not compacted_past(a, 5):  # the whole log, revision 6 included
                assert time.monotonic() < deadline + 20, "the log was not compacted"
                time.sleep(0.1)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        waiting.join(40)
        assert answer and answer[0].status_code == 410, answer and answer[0].text
        assert answer[0].json()["reason"] == "Expired"
        assert time.monotonic() - resumed < 5  # not the long-poll's 30 s
    finally:
        for proc in (a, b):
            proc.stop()
