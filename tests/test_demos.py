"""The runnable demos do what their docstrings say, against a real server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

DEMOS = Path(__file__).resolve().parent.parent / "demos"


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


def test_the_ticker_rides_out_a_server_restart(server):
    options = ["--url", server.url, "--symbols", "3", "--count", "60", "--rate", "40", "--seed", "2"]
    ticker = subprocess.Popen(
        [sys.executable, str(DEMOS / "ticker.py"), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while httpx.get(f"{server.url}/v1/stocks").json()["revision"] < 3 + 10:
            assert time.monotonic() < deadline and ticker.poll() is None, ticker.stderr
            time.sleep(0.05)
        server.stop()
        time.sleep(0.5)  # long enough for a few moves to find nobody there
        server.start()
        _, err = ticker.communicate(timeout=40)
    finally:
        ticker.kill()
    assert ticker.returncode == 0, err
    assert "Traceback" not in err
    notices = err.splitlines()
    assert len(notices) == 2 and "server unavailable" in notices[0] and "retrying" in notices[0]
    assert notices[1] == "server back; moving on"
    # Every move was written (one cut off by the stop is written again, not lost).
    assert httpx.get(f"{server.url}/v1/stocks").json()["revision"] >= 3 + 60
