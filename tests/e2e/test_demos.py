"""The runnable demos do what their docstrings say, against a real server."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from tests.support import REPO
from tests.support.server import ServerProcess

DEMOS = REPO / "demos"


def test_the_ticker_writes_each_move_as_a_patch_a_watcher_can_replay(server):
    options = ["--url", server.url, "--symbols", "5", "--count", "40", "--rate", "400", "--seed", "1"]
    done = subprocess.run(
        [sys.executable, str(DEMOS / "ticker.py"), *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "5 symbols" in done.stdout

    listed = httpx.get(f"{server.url}/v1/stocks").json()
    assert listed["revision"] == 5 + 40  # every symbol put once, then one revision per move
    assert sorted(r["id"] for r in listed["items"]) == ["AAPL", "AMZN", "GOOG", "MSFT", "NVDA"]
    events = httpx.get(
        f"{server.url}/v1/stocks", params={"watch": "longpoll", "since": 0, "timeout": 1}
    ).json()["events"]
    assert [e["type"] for e in events] == ["ADDED"] * 5 + ["MODIFIED"] * 40
    # Replaying the log gives every move's change from the price before it, and the list's state.
    prices: dict[str, float] = {}
    for event in events:
        data = event["object"]["data"]
        if event["type"] == "MODIFIED":
            assert data["change"] == round(data["price"] - prices[data["symbol"]], 2)
        prices[data["symbol"]] = data["price"]
    assert prices == {r["id"]: r["data"]["price"] for r in listed["items"]}


# Each simulator, writing steadily to its own collection; `--url` is added.
SIMULATORS = {
    "ticker.py": ("stocks", ["--symbols", "5", "--rate", "40"]),
    "iot.py": ("sensors", ["--sensors", "20", "--rate", "40"]),
    "auction.py": ("lots", ["--interval", "0.05"]),
    "collab.py": ("lists", ["--interval", "0.05"]),
    "chat.py": ("messages", ["--interval", "0.05"]),
}


def last_write(url: str, collection: str) -> int:
    """The revision of the latest write to `collection` (0 before the first)."""
    items = httpx.get(f"{url}/v1/{collection}").json()["items"]
    return max((item["revision"] for item in items), default=0)


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_every_simulator_carries_on_across_a_server_restart_with_a_notice_and_no_traceback(
    server: ServerProcess,
):
    running = {
        script: subprocess.Popen(
            [sys.executable, str(DEMOS / script), "--url", server.url, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script, (_, options) in SIMULATORS.items()
    }
    try:
        for collection, _ in SIMULATORS.values():
            wait_for(lambda: last_write(server.url, collection) > 0)  # noqa: B023 (called at once)
        server.restart()  # the same port and database
        restarted = httpx.get(f"{server.url}/v1/_collections").json()["revision"]
        for collection, _ in SIMULATORS.values():  # each writing again
            wait_for(lambda: last_write(server.url, collection) > restarted)  # noqa: B023 (called at once)
    finally:
        for simulator in running.values():
            simulator.send_signal(signal.SIGINT)  # Ctrl-C: how a demo is stopped
    for script, simulator in running.items():
        out, err = simulator.communicate(timeout=20)
        assert simulator.returncode == 0, (script, err)
        assert "Traceback" not in err and "Traceback" not in out, script
        lost, back = err.splitlines()  # one line as the server went, one as it came back
        assert re.fullmatch(r"server unreachable \(.+\); retrying", lost), (script, lost)
        assert back == "server is back; carrying on", script


def test_the_robots_edit_of_the_list_is_made_again_only_where_it_is_still_to_do():
    # After a 412 the robot makes its edit again on the newer list; an add whose first attempt
    # committed (its answer lost) is there already and is not added twice.
    sys.path.insert(0, str(DEMOS))
    try:
        from collab import patch_for  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DEMOS))
    milk = {"id": "m", "text": "milk", "done": False}
    eggs = {"id": "e", "text": "eggs", "done": False}
    add = {"op": "add", "item": eggs}
    assert patch_for(add, [milk]) == [{"op": "add", "path": "/items/-", "value": eggs}]
    assert patch_for(add, [milk, eggs]) is None
    # Found again by id wherever someone else's edit moved it; gone or already so: nothing to do.
    done = {"op": "done", "id": "m", "done": True}
    assert patch_for(done, [eggs, milk]) == [{"op": "replace", "path": "/items/1/done", "value": True}]
    assert patch_for(done, [eggs, {**milk, "done": True}]) is None
    assert patch_for({"op": "remove", "id": "m"}, [eggs, milk]) == [{"op": "remove", "path": "/items/1"}]
    assert patch_for({"op": "remove", "id": "m"}, [eggs]) is None
