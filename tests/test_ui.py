"""The live dashboard at /ui: how it is served, and, in a real browser (headless Chromium), that
its table follows the server through writes, filters, restarts, an expired history and refusals."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .security_keys import AUDIENCE, ISSUER, SECRET, hs_token
from .server import ServerProcess

JWT = {"auth": "jwt", "jwt_secret": SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}


# -- served ------------------------------------------------------------------------------------


def test_the_page_and_its_files_are_served_under_a_policy_that_runs_no_inline_script(api):
    page = api.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script" in page.text and "<script>" not in page.text  # the script is a file of its own
    for name, media_type in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        assert f'"ui/{name}"' in page.text  # relative: an app mounted under a prefix still works
        file = api.get(f"/ui/{name}")
        assert file.status_code == 200 and file.headers["content-type"].startswith(media_type)
        etag = file.headers["etag"]
        for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = api.get(f"/ui/{name}", headers={"If-None-Match": if_none_match})
            assert again.status_code == 304 and again.content == b"", if_none_match
        assert api.get(f"/ui/{name}", headers={"If-None-Match": '"other"'}).status_code == 200
        head = api.head(f"/ui/{name}")  # what GET would answer, without the body
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(file.content)) and head.headers["etag"] == etag
    assert api.head("/ui").status_code == 200
    missing = api.get("/ui/secrets.txt")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert "/ui" in api.get("/openapi.json").json()["paths"]


def test_the_page_is_public_where_the_api_asks_for_a_credential(jwt_server: ServerProcess):
    assert httpx.get(jwt_server.url + "/ui").status_code == 200
    assert httpx.get(jwt_server.url + "/ui/dashboard.js").status_code == 200
    assert httpx.get(jwt_server.url + "/v1/notes").status_code == 401


# -- in a browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("jwt"), **JWT).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip(
            "no Chromium on this machine (Debian: apt-get install chromium); the /ui browser tests need it"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    with sync_api.sync_playwright() as playwright:
        # No sandbox: CI runs as root, where Chromium's sandbox cannot start.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    """Opens a URL in a fresh browser context; fails the test on any script error of the page.
    The page's requests are kept in `page.sent`."""
    contexts, errors = [], []

    def open_(url: str) -> Any:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.sent = []
        page.on("request", lambda request: page.sent.append(request))
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors


def table(page: Any) -> dict[str, tuple[int, Any]]:
    """The dashboard's table: id -> (revision, data), read from the page's text."""
    rows = page.evaluate(
        """() => [...document.querySelectorAll('#resources tbody tr')].map(
            (tr) => [tr.cells[0].textContent, tr.cells[1].textContent, tr.cells[2].textContent])"""
    )
    return {id: (int(revision), json.loads(data)) for id, revision, data in rows}


def server_table(url: str, collection: str, filter: str | None = None) -> dict[str, tuple[int, Any]]:
    params = {"limit": 10_000, **({"filter": filter} if filter else {})}
    listed = httpx.get(f"{url}/v1/{collection}", params=params).json()
    return {r["id"]: (r["revision"], r["data"]) for r in listed["items"]}


def shown(page: Any) -> tuple[str, str, int, str]:
    """State, revision, resource count and problem text, as the status line and alert show them."""
    return (
        page.get_attribute("#state", "data-state"),
        page.inner_text("#revision"),
        int(page.inner_text("#count")),
        page.inner_text("#problem") if page.is_visible("#problem") else "",
    )


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def lists(page: Any) -> int:
    """How many watches the server answered with the whole state: asked with `initial=true` and
    not resuming with `Last-Event-ID`, as EventSource does on its own when it reconnects.
    (Attempts that found no server are left out: they were never answered.)"""
    return sum(
        1
        for request in page.sent
        if "initial=true" in request.url
        and request.response() is not None
        and "last-event-id" not in request.all_headers()
    )


def follows(page: Any, url: str, collection: str, filter: str | None = None, timeout: float = 10.0) -> None:
    """The page is live and shows exactly what the server holds."""
    expected = server_table(url, collection, filter)

    def same() -> bool:
        state, _, count, _ = shown(page)
        return state == "live" and table(page) == expected and count == len(expected)

    eventually(same, timeout)


def storm(url: str, collection: str, writes: int, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(writes):
            id = f"r{rng.randrange(12)}"
            action = rng.random()
            if action < 0.6:
                client.put(
                    f"/v1/{collection}/{id}", json={"n": rng.randrange(100), "state": rng.choice("ab")}
                )
            elif action < 0.8:
                client.patch(
                    f"/v1/{collection}/{id}",
                    json={"n": rng.randrange(100)},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
            else:
                client.delete(f"/v1/{collection}/{id}")


def test_the_table_follows_every_change_and_shows_documents_only_as_text(server, open_page):
    markup = "<img src=x onerror=window.pwned=1>"
    httpx.put(f"{server.url}/v1/notes/a", json={"text": "first"})
    httpx.put(f"{server.url}/v1/notes/b", json={"text": markup})
    page = open_page(f"{server.url}/ui?collection=notes")
    follows(page, server.url, "notes")
    assert table(page)["b"][1] == {"text": markup}
    assert page.evaluate("window.pwned") is None
    assert page.locator("#resources img").count() == 0  # shown as text, not made an element

    storm(server.url, "notes", writes=60, seed=1)
    follows(page, server.url, "notes")
    assert lists(page) == 1
    log = page.inner_text("#events")
    assert "ADDED" in log and "MODIFIED" in log and "DELETED" in log

    # The page's own write form and delete buttons: the table changes when the watch says so.
    page.fill("#write input[name=id]", "from-page")
    page.fill("#write input[name=data]", '{"x": 1}')
    page.click("#write button")
    eventually(lambda: table(page).get("from-page", (0, None))[1] == {"x": 1})
    page.click("button[data-delete='a']")
    eventually(lambda: "a" not in table(page))
    assert httpx.get(f"{server.url}/v1/notes/a").status_code == 404
    follows(page, server.url, "notes")


def test_a_long_table_shows_the_first_rows_by_id_as_resources_come_and_go(server, open_page):
    shown_at_most = 500  # ROWS_SHOWN in the page

    def batch(ops: list[dict[str, Any]]) -> None:
        assert httpx.post(f"{server.url}/v1/_batch", json={"ops": ops}, timeout=30).status_code == 200

    def put(id: str, n: int) -> dict[str, Any]:
        return {"op": "put", "collection": "long", "id": id, "data": {"n": n}}

    batch([put(f"k{i:04d}", i) for i in range(0, 1200, 2)])  # 600 resources, even numbers
    page = open_page(f"{server.url}/ui?collection=long")

    def first_rows_in_order() -> bool:
        expected = dict(sorted(server_table(server.url, "long").items())[:shown_at_most])
        rows = table(page)
        return list(rows) == list(expected) and rows == expected and shown(page)[2] == 600

    eventually(first_rows_in_order)
    assert page.inner_text("#more") == "showing the first 500 of 600 by id"
    # One resource more is one row inserted in its place, lit up, not the table built again,
    # and written once: its cells are filled before it goes in, no cell of the table after.
    page.evaluate(
        """() => {
            const body = document.querySelector('#resources tbody');
            window.mutations = { added: 0, removed: 0, cells: 0 };
            new MutationObserver((records) => records.forEach((r) => {
                if (r.target !== body) window.mutations.cells += 1;
                else {
                    window.mutations.added += r.addedNodes.length;
                    window.mutations.removed += r.removedNodes.length;
                }
            })).observe(body, { childList: true, subtree: true, characterData: true });
        }"""
    )
    batch([put("k0001", 1)])
    eventually(lambda: "k0001" in table(page))
    assert list(table(page))[:3] == ["k0000", "k0001", "k0002"]
    # k0998 went below the cut.
    assert page.evaluate("window.mutations") == {"added": 1, "removed": 1, "cells": 0}
    lit = "(id) => document.querySelector(`#resources tr[data-id='${id}']`).getAnimations().length"
    assert page.evaluate(lit, "k0001") == 1 and page.evaluate(lit, "k0000") == 0
    rng = random.Random(10)
    for _ in range(5):
        # Ids that come before, among and after the shown ones; some go, some change.
        born = [put(f"k{rng.randrange(1, 1200, 2):04d}", -1) for _ in range(30)]
        gone = [
            {"op": "delete", "collection": "long", "id": id}
            for id in rng.sample(sorted(server_table(server.url, "long")), 30)
            if id not in {op["id"] for op in born}
        ]
        changed = [put(f"k{rng.randrange(0, 1200, 2):04d}", rng.randrange(1000)) for _ in range(30)]
        changed = [op for op in changed if op["id"] not in {g["id"] for g in gone}]
        batch(born + gone + changed)
    eventually(lambda: shown(page)[2] == len(server_table(server.url, "long")))
    eventually(lambda: list(table(page)) == sorted(server_table(server.url, "long"))[:shown_at_most])
    expected = dict(sorted(server_table(server.url, "long").items())[:shown_at_most])
    eventually(lambda: table(page) == expected)
    assert lists(page) == 1


def test_a_filtered_table_keeps_membership_and_a_bad_filter_says_why(server, open_page):
    for i in range(6):
        httpx.put(f"{server.url}/v1/orders/o{i}", json={"state": "open" if i % 2 else "shut"})
    page = open_page(f"{server.url}/ui?collection=orders&filter=state%3Dopen")
    follows(page, server.url, "orders", "state=open")
    assert set(table(page)) == {"o1", "o3", "o5"}
    httpx.put(f"{server.url}/v1/orders/o1", json={"state": "shut"})  # leaves the filter
    httpx.put(f"{server.url}/v1/orders/o2", json={"state": "open"})  # joins it
    follows(page, server.url, "orders", "state=open")
    assert set(table(page)) == {"o2", "o3", "o5"}

    page.fill("#watch input[name=filter]", "state>")
    page.click("#watch button")
    eventually(lambda: shown(page)[0] == "stopped")
    assert "400" in shown(page)[3] and "expected a value" in shown(page)[3]
    assert table(page) == {}


def test_the_table_resumes_across_restarts_and_a_kill_without_listing_again(make_server, open_page):
    server: ServerProcess = make_server(sse_retry_ms=100, shutdown_grace=0.5)
    storm(server.url, "stocks", writes=20, seed=2)
    page = open_page(f"{server.url}/ui?collection=stocks")
    follows(page, server.url, "stocks")
    for stop in (server.stop, server.kill):
        stop()
        server.start()
        storm(server.url, "stocks", writes=40, seed=3)  # some before the page is back, some after
        follows(page, server.url, "stocks")
    # Every change came by resuming from the last one seen (Last-Event-ID), none by a new list.
    assert lists(page) == 1
    assert any(r.response() is not None and "last-event-id" in r.all_headers() for r in page.sent)


class SilencingProxy:
    """A TCP relay to `port` that can go silent: `silence()` makes every connection open so far
    swallow what it is sent, in both directions, without closing (a path that died with no FIN
    or RST, as after a NAT dropped it). Connections made later are relayed as usual."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.opened = 0
        self.silent_below = 0  # connections numbered below this relay nothing
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self) -> None:
        self.silent_below = self.opened

    def close(self) -> None:
        for sock in [self.listener, *self.sockets]:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            number, self.opened = self.opened, self.opened + 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(source, sink, number), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket, number: int) -> None:
        try:
            while data := source.recv(65536):
                if number >= self.silent_below:
                    sink.sendall(data)
            if number >= self.silent_below:
                sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_a_connection_that_went_silent_is_dropped_and_the_table_resumes(server, open_page):
    # No heartbeat comes through a dead path and EventSource never notices: after two heartbeats
    # and a second of silence the page must drop it and resume from its revision on a new one.
    proxy = SilencingProxy(server.port)
    try:
        storm(server.url, "feeds", writes=10, seed=8)
        page = open_page(f"{proxy.url}/ui?collection=feeds&heartbeat=1")
        follows(page, server.url, "feeds")
        assert all("heartbeat=1" in r.url for r in page.sent if "watch=true" in r.url)
        proxy.silence()
        silenced_at = time.monotonic()
        storm(server.url, "feeds", writes=20, seed=9)
        follows(page, server.url, "feeds", timeout=20)
        assert time.monotonic() - silenced_at > 2  # the page waited for two heartbeats
        assert "nothing heard for" in page.inner_text("#events")
        assert any("since=" in r.url and "watch=true" in r.url for r in page.sent)
        assert lists(page) == 1
    finally:
        proxy.close()


def test_a_refused_reconnection_is_tried_again_from_the_last_revision_seen(make_server, open_page):
    # Watches are rationed (3 per 20 s per address). While the page is cut off from the network
    # the server restarts and they are used up, so its reconnection is refused with 429, on which
    # EventSource gives up: the page must try again itself, when Retry-After says, from the last
    # revision it has.
    server: ServerProcess = make_server(sse_retry_ms=300, shutdown_grace=0.5, watch_rate_limit_ip="3/20s")
    storm(server.url, "quotes", writes=10, seed=6)
    page = open_page(f"{server.url}/ui?collection=quotes")
    follows(page, server.url, "quotes")
    page.context.set_offline(True)
    server.restart()
    rationed = [
        httpx.get(f"{server.url}/v1/quotes", params={"watch": "longpoll", "timeout": 0.1}).status_code
        for _ in range(4)
    ]
    assert rationed == [200, 200, 200, 429]
    storm(server.url, "quotes", writes=30, seed=7)
    page.context.set_offline(False)
    follows(page, server.url, "quotes", timeout=30)
    answered = [(r, r.response()) for r in page.sent if "watch=true" in r.url and r.response() is not None]
    assert any(response.status == 429 for _, response in answered)
    assert any("since=" in r.url and response.status == 200 for r, response in answered)
    assert lists(page) == 1


def test_the_table_lists_again_once_the_history_horizon_has_passed_it(make_server, open_page):
    # While the page is cut off, the server restarts and compacts its revision away: its
    # reconnection meets 410, and the page lists again.
    server: ServerProcess = make_server(
        sse_retry_ms=300, shutdown_grace=0.5, history_events=5, compaction_interval=0.1
    )
    storm(server.url, "ticks", writes=10, seed=4)
    page = open_page(f"{server.url}/ui?collection=ticks")
    follows(page, server.url, "ticks")
    page.context.set_offline(True)
    server.restart()
    storm(server.url, "ticks", writes=40, seed=5)
    time.sleep(0.5)  # two compactions
    page.context.set_offline(False)
    eventually(lambda: lists(page) == 2, timeout=15)
    follows(page, server.url, "ticks")


def test_a_refused_watch_says_why_and_a_token_lets_it_in(jwt_server: ServerProcess, open_page):
    token = hs_token()
    auth = {"Authorization": f"Bearer {token}"}
    httpx.put(f"{jwt_server.url}/v1/secrets/s1", json={"v": 1}, headers=auth)
    page = open_page(f"{jwt_server.url}/ui?collection=secrets")
    eventually(lambda: shown(page)[0] == "stopped")
    assert shown(page)[3].startswith("401 Unauthorized")

    page.fill("#watch input[name=token]", token)
    page.click("#watch button")
    eventually(lambda: shown(page)[0] == "live" and table(page) == {"s1": (1, {"v": 1})})
    assert "access_token" not in page.url  # the token stays out of the address bar and history
    page.fill("#write input[name=id]", "s2")
    page.fill("#write input[name=data]", '{"v": 2}')
    page.click("#write button")
    eventually(lambda: "s2" in table(page))
    assert httpx.get(f"{jwt_server.url}/v1/secrets/s2", headers=auth).json()["data"] == {"v": 2}


def test_the_wheel_carries_the_page(tmp_path: Path):
    # Package data: a server installed from the wheel, not from this checkout, serves /ui too.
    repo = Path(__file__).resolve().parent.parent
    source = tmp_path / "source"  # built from a copy: the build leaves its files beside the source
    shutil.copytree(repo / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("watchroute-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"watchroute/ui/{name}" for name in ("index.html", "dashboard.js", "dashboard.css")} <= names


def test_a_token_that_may_read_but_not_watch_is_told_so(jwt_server: ServerProcess, open_page):
    # The page's question after a refusal is a watch too: a read grant alone does not pass it.
    page = open_page(f"{jwt_server.url}/ui?collection=secrets")
    page.fill("#watch input[name=token]", hs_token(scope="read:*"))
    page.click("#watch button")
    eventually(lambda: shown(page)[0] == "stopped")
    assert shown(page)[3].startswith("403 Forbidden")
