"""The live dashboard at /ui: how it is served, and, in a real browser (headless Chromium), that
its table follows the server through writes, filters, restarts, an expired history and refusals."""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import REPO
from tests.support.browser import eventually, lists
from tests.support.security_keys import AUDIENCE, ISSUER, SECRET, hs_token
from tests.support.server import ServerFactory, ServerProcess
from watchroute.http.demo_pages import FILES as DEMO_FILES
from watchroute.watch.heartbeat import HEARTBEAT_DEFAULT, HEARTBEAT_MAX, HEARTBEAT_MIN

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
    # Every module the script imports, and the modules those import, is served as a script.
    imported, seen = ["dashboard.js"], set()
    while imported:
        module = imported.pop()
        seen.add(module)
        served = api.get(f"/ui/{module}")
        assert served.headers["content-type"] == "text/javascript; charset=utf-8", module
        imported += [m for m in re.findall(r'from "\./([\w.]+)"', served.text) if m not in seen]
    assert seen == {"dashboard.js", "editor.js", "panels.js", "shared.js", "table.js"}
    assert api.head("/ui").status_code == 200
    missing = api.get("/ui/secrets.txt")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert "/ui" in api.get("/openapi.json").json()["paths"]


def test_the_dashboard_asks_for_heartbeats_within_the_servers_bounds():
    """The dashboard's script cannot import the server's constants: it states them, and they
    must be the server's, or a page address's `?heartbeat=` would be refused as a bad watch."""
    script = (REPO / "src/watchroute/ui/dashboard.js").read_text()
    stated = {
        name: float(value)
        for name, value in re.findall(r"^const (HEARTBEAT_(?:S|MIN_S|MAX_S)) = (\d+);", script, re.M)
    }
    assert stated == {
        "HEARTBEAT_S": HEARTBEAT_DEFAULT,
        "HEARTBEAT_MIN_S": HEARTBEAT_MIN,
        "HEARTBEAT_MAX_S": HEARTBEAT_MAX,
    }
    demos = (REPO / "src/watchroute/ui/demos/watch.js").read_text()
    [demo] = re.findall(r"^const HEARTBEAT_S = (\d+);", demos, re.M)
    assert HEARTBEAT_MIN <= float(demo) <= HEARTBEAT_MAX


def test_the_page_is_public_where_the_api_asks_for_a_credential(jwt_server: ServerProcess):
    assert httpx.get(jwt_server.url + "/ui").status_code == 200
    assert httpx.get(jwt_server.url + "/ui/dashboard.js").status_code == 200
    assert httpx.get(jwt_server.url + "/v1/notes").status_code == 401


# -- in a browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers("jwt", **JWT)


def cell(value: Any) -> str:
    """A field's value as the table shows it (cellText in the page): strings as they are, the
    rest as compact JSON, a long object or list cut short."""
    if isinstance(value, str):
        return value
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text[:79] + "…" if isinstance(value, dict | list) and len(text) > 80 else text


def table(page: Any) -> dict[str, tuple[int, dict[str, str]]]:
    """The dashboard's table: id -> (revision, {field: its cell's text}), read from the page's
    text; the fields are the columns' (empty cells left out)."""
    head, rows = page.evaluate(
        """() => [
            [...document.querySelectorAll('#resources thead [data-sort]')].map((b) => b.dataset.sort),
            [...document.querySelectorAll('#resources tbody tr')].map(
                (tr) => [...tr.cells].slice(0, -1).map((td) => td.textContent)),
        ]"""
    )
    assert head[:2] == ["id", "revision"]
    return {
        id: (int(revision), {f: text for f, text in zip(head[2:], fields, strict=True) if text})
        for id, revision, *fields in rows
    }


def server_table(url: str, collection: str, filter: str | None = None) -> dict[str, tuple[int, Any]]:
    """What the table should show: the server's list, as table() reads it."""
    params: dict[str, str | int | float] = {"limit": 10_000, **({"filter": filter} if filter else {})}
    listed = httpx.get(f"{url}/v1/{collection}", params=params).json()
    return {
        r["id"]: (r["revision"], {f: cell(v) for f, v in r["data"].items() if cell(v)})
        for r in listed["items"]
    }


def shown(page: Any) -> tuple[str, str, int, str]:
    """State, revision, resource count and problem text, as the status line and alert show them."""
    return (
        page.get_attribute("#state", "data-state"),
        page.inner_text("#revision"),
        int(page.inner_text("#count")),
        page.inner_text("#problem") if page.is_visible("#problem") else "",
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
    eventually(lambda: table(page).get("from-page", (0, None))[1] == {"x": "1"})
    page.click("button[data-delete='a']")  # asks first
    assert page.inner_text("button[data-delete='a']") == "confirm delete"
    assert httpx.get(f"{server.url}/v1/notes/a").status_code == 200
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
    assert page.inner_text("#more") == "showing 1 to 500 of 600 by id"
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
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the server is gone (the test is over): refuse as it would
                client.close()
                continue
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
    eventually(lambda: shown(page)[0] == "live" and table(page) == {"s1": (1, {"v": "1"})})
    assert "access_token" not in page.url  # the token stays out of the address bar and history
    page.fill("#write input[name=id]", "s2")
    page.fill("#write input[name=data]", '{"v": 2}')
    page.click("#write button")
    eventually(lambda: "s2" in table(page))
    assert httpx.get(f"{jwt_server.url}/v1/secrets/s2", headers=auth).json()["data"] == {"v": 2}


@pytest.mark.slow
def test_the_wheel_carries_the_dashboard_and_the_demo_pages(tmp_path: Path):
    # Package data: a server installed from the wheel, not from this checkout, serves /ui and
    # /demos/ too. One wheel built for both: a build takes seconds.
    repo = REPO
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
    files = ("index.html", "dashboard.js", "dashboard.css", "editor.js", "panels.js", "shared.js", "table.js")
    assert {f"watchroute/ui/{name}" for name in files} <= names
    assert {f"watchroute/ui/demos/{file}" for file, _ in DEMO_FILES.values()} <= names


def test_a_token_that_may_read_but_not_watch_is_told_so(jwt_server: ServerProcess, open_page):
    # The page's question after a refusal is a watch too: a read grant alone does not pass it.
    page = open_page(f"{jwt_server.url}/ui?collection=secrets")
    page.fill("#watch input[name=token]", hs_token(scope="read:*"))
    page.click("#watch button")
    eventually(lambda: shown(page)[0] == "stopped")
    assert shown(page)[3].startswith("403 Forbidden")


# -- the console ---------------------------------------------------------------------------------


def test_the_status_figures_count_watchers_by_transport_as_they_come_and_go(server: ServerProcess):
    from websockets.sync.client import connect

    def status() -> dict[str, Any]:
        return httpx.get(f"{server.url}/ui/status.json").json()

    assert status()["watchers_by_transport"] == {} and status()["instances"] == 1
    httpx.put(f"{server.url}/v1/fleet/a", json={"n": 1})
    httpx.put(f"{server.url}/v1/fleet/b", json={"n": 2})
    poll = threading.Thread(
        target=httpx.get,
        args=(f"{server.url}/v1/fleet",),
        kwargs={"params": {"watch": "longpoll", "since": 2, "timeout": 2}, "timeout": 10},
    )
    sse_headers = {"Accept": "text/event-stream"}
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/v1/fleet", params={"watch": "true"}, headers=sse_headers),
        client.stream("GET", "/v1/fleet", params={"watch": "true"}),
        connect(server.url.replace("http://", "ws://") + "/v1/fleet"),
    ):
        poll.start()
        want = {"longpoll": 1, "ndjson": 1, "sse": 1, "websocket": 1}
        eventually(lambda: status()["watchers_by_transport"] == want)
        figures = status()
        assert figures["watchers"] == 4 and figures["revision"] == 2 and figures["changes"] == 2
        assert figures["horizon"] == 0 and figures["instances"] == 1
        scraped = httpx.get(f"{server.url}/metrics").text
        assert 'watchroute_watchers_by_transport{transport="sse"} 1.0' in scraped
        assert "watchroute_compacted_revision 0.0" in scraped
        poll.join()
        eventually(lambda: "longpoll" not in status()["watchers_by_transport"])  # it answered
    eventually(lambda: status()["watchers_by_transport"] == {} and status()["watchers"] == 0)


def test_the_status_figures_are_every_workers_with_each_write_counted_once(make_server):
    server: ServerProcess = make_server(workers=2)

    def status() -> dict[str, Any]:
        return httpx.get(f"{server.url}/ui/status.json", headers={"Connection": "close"}).json()

    for i in range(6):  # a connection each: the kernel spreads them over both workers
        put_fresh = httpx.put(f"{server.url}/v1/crew/m{i}", json={"n": i}, headers={"Connection": "close"})
        assert put_fresh.status_code == 201
    sse = {"Accept": "text/event-stream"}
    with (
        httpx.Client(base_url=server.url, timeout=10) as one,
        httpx.Client(base_url=server.url, timeout=10) as other,
        one.stream("GET", "/v1/crew", params={"watch": "true"}, headers=sse),
        other.stream("GET", "/v1/crew", params={"watch": "true"}, headers=sse),
    ):
        # Each worker took every write to its watchers; the panel counts each write once, and
        # adds up the watchers, wherever they are (as of the workers' last publication).
        want = {"instances": 2, "revision": 6, "changes": 6, "watchers": 2}
        eventually(
            lambda: {k: status()[k] for k in want} == want and status()["watchers_by_transport"] == {"sse": 2}
        )


@pytest.fixture(scope="module")
def console(shared_server: ServerProcess) -> ServerProcess:
    """One server for the console's tests, each on collections of its own."""
    return shared_server


def put(server: ServerProcess, collection: str, id: str, data: dict[str, Any]) -> int:
    written = httpx.put(f"{server.url}/v1/{collection}/{id}", json=data)
    assert written.status_code in (200, 201), written.text
    return written.json()["revision"]


def texts(page: Any, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "(els) => els.map((el) => el.textContent)")


def test_the_console_lists_collections_and_shows_a_sortable_column_per_field(console, open_page):
    tags = [f"tag-{i}" for i in range(20)]  # longer than a cell shows
    put(console, "fleet", "a", {"name": "alpha", "speed": 10, "tags": tags})
    put(console, "fleet", "b", {"name": "bravo", "speed": 3, "pos": {"lat": 1.5, "lon": 2}})
    put(console, "fleet", "c", {"name": "charlie", "speed": -1})
    put(console, "depots", "d", {"city": "Lyon"})
    page = open_page(f"{console.url}/ui")
    eventually(lambda: {"fleet3", "depots1"} <= set(texts(page, "#collection-list button")))
    page.click("#collection-list button[data-collection=fleet]")
    follows(page, console.url, "fleet")
    assert "collection=fleet" in page.url
    assert page.get_attribute("#collection-list button[data-collection=fleet]", "aria-current") == "true"
    assert texts(page, "#resources thead [data-sort]") == ["id", "revision", "name", "pos", "speed", "tags"]
    rows = table(page)
    assert rows["b"][1]["pos"] == '{"lat":1.5,"lon":2}'  # nested, compact
    assert rows["a"][1]["tags"].endswith("…") and len(rows["a"][1]["tags"]) == 80

    page.click("#resources [data-sort=speed]")
    eventually(lambda: list(table(page)) == ["c", "b", "a"])
    assert page.get_attribute("#resources th[aria-sort]", "aria-sort") == "ascending"
    page.click("#resources [data-sort=speed]")
    eventually(lambda: list(table(page)) == ["a", "b", "c"])
    put(console, "fleet", "b", {"name": "bravo", "speed": 100})  # moves up as it changes
    put(console, "fleet", "e", {"speed": 5})  # joins in its place
    eventually(lambda: list(table(page)) == ["b", "a", "e", "c"])
    follows(page, console.url, "fleet")  # the pos column went with the last document that had it
    assert "pos" not in texts(page, "#resources thead [data-sort]")
    page.click("#resources [data-sort=revision]")
    eventually(lambda: list(table(page)) == ["a", "c", "b", "e"])

    # The search box is the watch's filter, asked of the server.
    page.fill("#watch input[name=filter]", "speed>4")
    page.press("#watch input[name=filter]", "Enter")
    follows(page, console.url, "fleet", "speed>4")
    assert set(table(page)) == {"a", "b", "e"}
    assert any("watch=true" in r.url and "filter=speed%3E4" in r.url for r in page.sent)
    assert "filter=speed%3E4" in page.url


def test_the_status_panel_shows_the_servers_revision_and_watchers(console, open_page):
    revision = put(console, "panel", "p", {"n": 1})
    page = open_page(f"{console.url}/ui?collection=panel")
    follows(page, console.url, "panel")
    eventually(lambda: int(page.inner_text("#st-revision")) >= revision)
    eventually(
        lambda: int(page.inner_text("#st-watchers")) >= 1 and "sse" in page.inner_text("#st-transports")
    )
    assert page.inner_text("#st-horizon") == "0"
    assert page.is_hidden("#st-instances-row")  # one instance
    for i in range(5):
        put(console, "panel", f"w{i}", {"n": i})
    eventually(lambda: page.inner_text("#st-writes") not in ("-", "0.0"))


def test_pages_go_past_the_first_rows_and_follow_changes(console, open_page):
    httpx.post(
        f"{console.url}/v1/_batch",
        json={
            "ops": [
                {"op": "put", "collection": "paged", "id": f"p{i:02d}", "data": {"n": i}} for i in range(12)
            ]
        },
    )
    page = open_page(f"{console.url}/ui?collection=paged&page=5")
    eventually(lambda: shown(page)[2] == 12)
    assert page.inner_text("#more") == "showing 1 to 5 of 12 by id"
    assert list(table(page)) == [f"p{i:02d}" for i in range(5)]
    assert page.is_disabled("#previous-page")
    page.click("#next-page")
    eventually(lambda: list(table(page)) == [f"p{i:02d}" for i in range(5, 10)])
    assert page.inner_text("#more") == "showing 6 to 10 of 12 by id"
    page.click("#next-page")
    eventually(lambda: list(table(page)) == ["p10", "p11"])
    assert page.is_disabled("#next-page")
    put(console, "paged", "p12", {"n": 12})  # comes on the page shown
    eventually(lambda: list(table(page)) == ["p10", "p11", "p12"])
    page.click("#previous-page")
    eventually(lambda: list(table(page)) == [f"p{i:02d}" for i in range(5, 10)])
    assert "page=5" in page.url


def test_a_document_is_edited_with_if_match_and_a_conflict_shows_the_newer_version(console, open_page):
    first = put(console, "edits", "e1", {"n": 1, "keep": "x", "drop": True})
    page = open_page(f"{console.url}/ui?collection=edits")
    follows(page, console.url, "edits")
    page.fill("#write input[name=id]", "bad")
    page.fill("#write input[name=data]", "not json")
    page.click("#write button")
    assert page.is_visible("#problem")  # to be cleared by the next success

    page.click("#resources tbody tr[data-id=e1] td")
    assert page.is_visible("#editor") and page.inner_text("#editor-revision") == str(first)
    assert json.loads(page.input_value("#editor-text")) == {"n": 1, "keep": "x", "drop": True}
    page.fill("#editor-text", '{"n": 2, "keep": "x", "added": [1]}')
    page.click("#save-patch")
    eventually(lambda: page.inner_text("#editor-note").startswith("saved as PATCH @"))
    patched = int(page.inner_text("#editor-revision"))
    assert page.inner_text("#editor-note") == f"saved as PATCH @{patched}" and patched > first
    (patch,) = [r for r in page.sent if r.method == "PATCH"]
    assert (
        patch.headers["if-match"] == f'"{first}"'
        and patch.headers["content-type"] == "application/merge-patch+json"
    )
    assert json.loads(patch.post_data) == {"n": 2, "drop": None, "added": [1]}
    assert httpx.get(f"{console.url}/v1/edits/e1").json()["data"] == {"n": 2, "keep": "x", "added": [1]}
    assert page.is_hidden("#problem")

    newer = put(console, "edits", "e1", {"n": 99})  # someone else, meanwhile
    eventually(lambda: f"now @{newer}" in page.inner_text("#editor-note"))
    page.fill("#editor-text", '{"n": 3}')
    page.click("#save-put")
    eventually(lambda: page.is_visible("#conflict"))
    assert "412" in page.inner_text("#conflict-text") and f"now @{newer}" in page.inner_text("#conflict-text")
    assert json.loads(page.inner_text("#conflict-newer")) == {"n": 99}
    assert httpx.get(f"{console.url}/v1/edits/e1").json()["data"] == {"n": 99}  # not overwritten
    assert json.loads(page.input_value("#editor-text")) == {"n": 3}  # the edit is kept
    page.click("#conflict-load")
    assert page.inner_text("#editor-revision") == str(newer) and json.loads(
        page.input_value("#editor-text")
    ) == {"n": 99}
    page.fill("#editor-text", '{"n": 100}')
    page.click("#save-put")
    eventually(lambda: page.inner_text("#editor-note").startswith("saved as PUT @"))
    assert httpx.get(f"{console.url}/v1/edits/e1").json()["data"] == {"n": 100}
    assert [r.headers["if-match"] for r in page.sent if r.method == "PUT"] == [f'"{patched}"', f'"{newer}"']

    page.click("#editor-delete")  # asks first
    assert page.inner_text("#editor-delete") == "confirm delete"
    assert httpx.get(f"{console.url}/v1/edits/e1").status_code == 200
    page.click("#editor-delete")
    eventually(lambda: page.is_hidden("#editor") and table(page) == {})
    assert httpx.get(f"{console.url}/v1/edits/e1").status_code == 404


def test_a_paused_watch_resumes_from_its_revision_or_an_older_one(console, open_page):
    written = [put(console, "pausing", f"q{i}", {"n": i}) for i in range(3)]
    page = open_page(f"{console.url}/ui?collection=pausing")
    follows(page, console.url, "pausing")
    paused_at = int(shown(page)[1])
    page.click("#pause")
    eventually(lambda: shown(page)[0] == "paused")
    put(console, "pausing", "q9", {"n": 9})
    time.sleep(0.3)
    assert "q9" not in table(page) and shown(page)[1] == str(paused_at)
    page.click("#pause")
    follows(page, console.url, "pausing")
    assert any(f"since={paused_at}" in r.url and "watch=true" in r.url for r in page.sent)
    log = page.inner_text("#events")
    assert f"paused @{paused_at}" in log and f"resumed from @{paused_at}" in log

    # Replayed from q0's revision: the changes after it come (again: the initial state had them),
    # and the table ends current.
    assert "ADDED q1" not in page.inner_text("#events")
    page.fill("#replay input[name=since]", str(written[0]))
    page.click("#resume")
    eventually(lambda: f"ADDED q1 @{written[1]}" in page.inner_text("#events"))
    assert f"ADDED q2 @{written[2]}" in page.inner_text("#events")
    follows(page, console.url, "pausing")
    assert any(f"since={written[0]}&" in r.url and "watch=true" in r.url for r in page.sent)
    page.fill("#replay input[name=since]", str(paused_at + 100))  # later than the table
    page.click("#resume")
    assert "resume from a revision up to" in shown(page)[3]
    assert lists(page) == 1


def test_at_400_px_the_page_does_not_scroll_sideways_and_rows_open_from_the_keyboard(console, open_page):
    put(console, "wide", "w1", {f"field_{i}": "x" * 12 for i in range(12)})
    page = open_page(f"{console.url}/ui?collection=wide", viewport={"width": 400, "height": 800})
    follows(page, console.url, "wide")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate(
        "(() => { const s = document.querySelector('.scroll'); return s.scrollWidth > s.clientWidth })()"
    )
    page.focus("#resources tbody tr[data-id=w1]")
    page.keyboard.press("Enter")
    assert page.is_visible("#editor") and page.evaluate("document.activeElement.id") == "editor-text"
    page.keyboard.press("Escape")
    assert page.is_hidden("#editor")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
