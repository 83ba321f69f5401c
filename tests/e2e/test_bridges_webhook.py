"""OUT to a webhook: against a receiver that fails (500), then times out, then recovers,
every change is delivered, in order, signed; the deliveries are listed; the secret is in no
answer and no log line."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.bridging import START_SECONDS, put_bridge, status, wait_for, write_changes
from tests.support.server import ServerProcess

SECRET = "whsec-test-7c1f0e"


class Receiver:
    """Answers 500 to the first `failures` deliveries, keeps the next `slow` waiting past the
    bridge's timeout, then takes every one; records what it took and whether it was signed."""

    def __init__(self, failures: int, slow: int, slow_seconds: float) -> None:
        self.failures, self.slow, self.slow_seconds = failures, slow, slow_seconds
        self.seen = 0
        self.taken: list[dict[str, object]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.seen += 1
                if receiver.seen <= receiver.failures:
                    self.send_response(500)
                    self.end_headers()
                    return
                if receiver.seen <= receiver.failures + receiver.slow:
                    time.sleep(receiver.slow_seconds)
                    self.send_response(200)
                    self.end_headers()
                    return
                timestamp = self.headers["Watchroute-Timestamp"]
                expected = (
                    "sha256="
                    + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                )
                if not hmac.compare_digest(expected, self.headers["Watchroute-Signature"]):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.taken.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def revisions(self) -> list[int]:
        return [int(event["revision"]) for event in self.taken]  # type: ignore[call-overload]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "s", log_level="info")
    proc.workdir.mkdir()
    proc.start(timeout=START_SECONDS)
    yield proc
    proc.stop()


def test_every_change_is_delivered_in_order_and_signed_through_failures_and_timeouts(
    server: ServerProcess,
) -> None:
    receiver = Receiver(failures=3, slow=2, slow_seconds=3.0)
    try:
        put_bridge(
            server.url,
            "hook",
            direction="out",
            url=receiver.url,
            collection="orders",
            secret=SECRET,
            timeout=1,
        )
        written = write_changes(server.url, "orders", 0, 25)
        wait_for(lambda: receiver.revisions() == written, timeout=120)
        assert receiver.bad_signatures == 0
        by_resource: dict[str, list[int]] = {}
        for event in receiver.taken:
            by_resource.setdefault(event["object"]["id"], []).append(event["revision"])  # type: ignore[index,arg-type]
        assert all(revs == sorted(revs) for revs in by_resource.values())
        deliveries = httpx.get(f"{server.url}/v1/_bridges/hook/deliveries").json()["deliveries"]
        assert [d["status"] for d in deliveries[:3]] == [500, 500, 500]
        assert deliveries[3]["status"] is None and "no answer within 1 s" in deliveries[3]["error"]
        assert deliveries[-1]["status"] == 204 and deliveries[-1]["revision"] == written[-1]
        assert deliveries[0]["revision"] == deliveries[4]["revision"] == written[0]  # the same, again
        shown = status(server.url, "hook")
        assert shown["state"] == "running"
        assert shown["errors"] == 5
        for answer in (httpx.get(f"{server.url}/v1/_bridges/hook"), httpx.get(f"{server.url}/v1/_bridges")):
            assert SECRET not in answer.text
        server.stop()
        assert SECRET not in server.log()
        assert SECRET not in (server.workdir / "server.log").read_text()
    finally:
        receiver.server.shutdown()
