"""The demo pages at /demos/: how they are served, and, in a real browser (headless Chromium), what
their users see: the sensors' alerts entering and leaving, two bidders racing for one lot, two
people editing one list at once, two people chatting."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import REPO
from tests.support.browser import eventually, lists
from tests.support.server import ServerProcess

MARKUP = "<img src=x onerror=window.pwned=1>"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module; each test writes to collections of its own."""
    proc = ServerProcess(tmp_path_factory.mktemp("demos")).start()
    yield proc
    proc.stop()


# -- served ------------------------------------------------------------------------------------


def test_each_page_and_its_files_are_served_under_the_dashboards_policy(demo_server: ServerProcess):
    for name in ("iot", "auction", "collab", "chat"):
        page = httpx.get(f"{demo_server.url}/demos/{name}")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe" not in policy
        assert "<script>" not in page.text  # no inline script: each page's script is a file
        # Relative: the page's own files, and through them the API, under any prefix.
        assert f'src="{name}.js"' in page.text and 'href="demos.css"' in page.text
        script = httpx.get(f"{demo_server.url}/demos/{name}.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert 'from "./watch.js"' in script.text
        assert "innerHTML" not in script.text  # documents reach the page as text only
    shared = httpx.get(f"{demo_server.url}/demos/watch.js")
    assert shared.status_code == 200 and "innerHTML" not in shared.text
    etag = shared.headers["etag"]
    assert httpx.get(f"{demo_server.url}/demos/watch.js", headers={"If-None-Match": etag}).status_code == 304
    head = httpx.head(f"{demo_server.url}/demos/iot")
    assert head.status_code == 200 and head.content == b""
    for missing in ("chess", "iot.html", "..%2Fdashboard.js", "watch.py"):
        answer = httpx.get(f"{demo_server.url}/demos/{missing}")
        assert answer.status_code == 404, missing
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["reason"] == "NotFound"


# -- IoT ---------------------------------------------------------------------------------------


def alerts(page: Any) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#alerts li')].map((li) => li.dataset.id)")


def tiles(page: Any) -> dict[str, str]:
    """Sensor id -> the temperature its tile shows."""
    return dict(
        page.evaluate(
            """() => [...document.querySelectorAll('#grid .tile')].map(
                (t) => [t.dataset.id, t.firstChild.textContent])"""
        )
    )


def test_a_sensor_that_crosses_the_threshold_raises_an_alert_that_leaves_when_it_cools(
    demo_server: ServerProcess, open_page: Any
):
    url = f"{demo_server.url}/v1/heat"
    httpx.put(f"{url}/s-1", json={"room": "room 1", "temperature": 22.0})
    httpx.put(f"{url}/s-2", json={"room": MARKUP, "temperature": 29.9})
    httpx.put(f"{url}/s-3", json={"room": "room 3", "temperature": 31.0})
    page = open_page(f"{demo_server.url}/demos/iot?collection=heat")
    eventually(lambda: page.get_attribute("#state", "data-state") == "live" and alerts(page) == ["s-3"])
    assert tiles(page) == {"s-1": "22.0", "s-2": "29.9", "s-3": "31.0"}
    assert page.inner_text("#alert-count") == "1"

    # s-2 crosses 30: its alert enters, hotter alerts first.
    httpx.patch(
        f"{url}/s-2", json={"temperature": 30.5}, headers={"Content-Type": "application/merge-patch+json"}
    )
    eventually(lambda: alerts(page) == ["s-3", "s-2"])
    assert MARKUP in page.inner_text("#alerts")  # shown as text, never made an element
    assert page.locator("#alerts img").count() == 0 and page.evaluate("window.pwned") is None
    assert "ALERT s-2 30.5 °C" in page.inner_text("#log")
    assert "hot" in page.get_attribute('#grid .tile[data-id="s-2"]', "class")

    # s-3 cools down: its alert leaves, saying where it left at.
    httpx.patch(
        f"{url}/s-3", json={"temperature": 28.0}, headers={"Content-Type": "application/merge-patch+json"}
    )
    eventually(lambda: alerts(page) == ["s-2"] and page.inner_text("#alert-count") == "1")
    assert "clear s-3 28.0 °C" in page.inner_text("#log")
    eventually(lambda: tiles(page)["s-3"] == "28.0")
    assert "hot" not in page.get_attribute('#grid .tile[data-id="s-3"]', "class")


def test_the_dashboard_of_the_simulators_sensors_shows_what_the_server_holds(
    demo_server: ServerProcess, open_page: Any
):
    page = open_page(f"{demo_server.url}/demos/iot?collection=fleet")
    eventually(lambda: page.get_attribute("#state", "data-state") == "live")
    options = ["--url", demo_server.url, "--collection", "fleet", "--sensors", "60", "--count", "600"]
    done = subprocess.run(
        [sys.executable, str(REPO / "demos" / "iot.py"), *options, "--rate", "2000", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"open {demo_server.url}/demos/iot?collection=fleet" in done.stdout
    listed = httpx.get(f"{demo_server.url}/v1/fleet", params={"limit": 1000}).json()["items"]
    held = {r["id"]: f"{r['data']['temperature']:.1f}" for r in listed}
    hot = sorted(
        (r for r in listed if r["data"]["temperature"] > 30), key=lambda r: -r["data"]["temperature"]
    )
    assert len(held) == 60 and hot  # the seed makes some sensors overheat
    # A burst the page watched conflated: it ends on each sensor's last reading all the same.
    eventually(lambda: tiles(page) == held and alerts(page) == [r["id"] for r in hot], timeout=15)
    assert page.inner_text("#count") == "60"


# -- Auction -----------------------------------------------------------------------------------


def lot_shown(page: Any) -> tuple[str, str]:
    return page.inner_text("#bid"), page.inner_text("#bidder")


class Hold:
    """Holds the page's requests to `path` itself (not its watch of it, whose URL has a query)
    until `release`; later ones go through at once."""

    def __init__(self, page: Any, path: str) -> None:
        self.page = page
        self.held: list[Any] = []
        self.holding = True
        page.route(re.compile(re.escape(path) + "$"), self.route)

    def wait(self, count: int = 1, timeout: float = 10.0) -> None:
        """Until `count` requests are held. Playwright runs its route handlers only while the
        test is inside one of its calls, so the wait is one of them, not a sleep."""
        deadline = time.monotonic() + timeout
        while len(self.held) < count:
            assert time.monotonic() < deadline, f"{len(self.held)} of {count} requests held"
            self.page.wait_for_timeout(25)

    def route(self, route: Any) -> None:
        if self.holding:
            self.held.append(route)
        else:
            route.continue_()

    def release(self) -> None:
        self.holding = False
        for route in self.held:
            route.continue_()


def test_two_bidders_racing_on_the_same_bid_one_wins_the_other_is_told_412(
    demo_server: ServerProcess, open_page: Any
):
    lot = f"{demo_server.url}/v1/lots-race/lot-1"
    httpx.put(lot, json={"title": MARKUP, "bid": 100, "bidder": "opening bid", "bids": 0})
    alice = open_page(f"{demo_server.url}/demos/auction?collection=lots-race&lot=lot-1&name=alice")
    bob = open_page(f"{demo_server.url}/demos/auction?collection=lots-race&lot=lot-1&name=bob")
    for page in (alice, bob):
        eventually(lambda: lot_shown(page) == ("100", "opening bid"))  # noqa: B023 (called at once)
        assert MARKUP in page.inner_text("#title") and page.evaluate("window.pwned") is None

    # Both bid on 100, at its revision. Bob's bid is held on its way, so that Alice's lands first.
    revision = httpx.get(lot).json()["revision"]
    hold = Hold(bob, "/v1/lots-race/lot-1")
    bob.fill("input[name=amount]", "120")
    bob.click("#place button")
    hold.wait()
    alice.fill("input[name=amount]", "110")
    alice.click("#place button")
    eventually(lambda: alice.inner_text("#outcome") == "You lead with 110.")
    bids = [hold.held[0].request] + [r for r in alice.sent if r.method == "PUT"]
    assert [r.headers["if-match"] for r in bids] == [f'"{revision}"'] * 2  # racing on one revision
    for page in (alice, bob):
        eventually(lambda: lot_shown(page) == ("110", "alice"))  # noqa: B023 (called at once)
    hold.release()

    eventually(lambda: bob.inner_text("#outcome").startswith("412 Outbid"))
    assert bob.get_attribute("#outcome", "data-outcome") == "lost"
    assert "Your 120 was not placed" in bob.inner_text("#outcome")
    stored = httpx.get(lot).json()["data"]
    assert (stored["bid"], stored["bidder"], stored["bids"]) == (110, "alice", 1)  # one winner
    for page in (alice, bob):
        assert lot_shown(page) == ("110", "alice")

    # Bob bids again, now on 110: it holds, and every page shows it within a blink.
    bob.fill("input[name=amount]", "125")
    placed = time.monotonic()
    bob.click("#place button")
    eventually(lambda: lot_shown(alice) == ("125", "bob"), timeout=5)
    blink = time.monotonic() - placed
    assert blink < 1.0, f"Alice's page showed Bob's bid {blink:.3f} s after he placed it"
    eventually(lambda: bob.inner_text("#outcome") == "You lead with 125.")
    # A bid that is not above the one shown is not sent.
    alice.fill("input[name=amount]", "125")
    alice.click("#place button")
    eventually(lambda: alice.inner_text("#outcome") == "Bid more than 125.")
    assert httpx.get(lot).json()["data"]["bid"] == 125


# -- Collaborative list ------------------------------------------------------------------------


def list_shown(page: Any) -> list[tuple[str, bool]]:
    """The list as the page shows it: each item's text and whether it is ticked."""
    shown = page.evaluate(
        """() => [...document.querySelectorAll('#items li')].map(
            (li) => [li.querySelector('span').textContent, li.querySelector('input').checked])"""
    )
    return [(text, done) for text, done in shown]


def list_stored(url: str) -> list[tuple[str, bool]]:
    return [(item["text"], item["done"]) for item in httpx.get(url).json()["data"]["items"]]


def add(page: Any, text: str) -> None:
    page.fill("#add input[name=text]", text)
    page.click("#add button")


def test_two_people_editing_the_list_at_once_converge_on_the_same_list(
    demo_server: ServerProcess, open_page: Any
):
    url = f"{demo_server.url}/v1/lists-race/groceries"
    httpx.put(url, json={"title": "Groceries", "items": [{"id": "m", "text": "milk", "done": False}]})
    ann = open_page(f"{demo_server.url}/demos/collab?collection=lists-race&list=groceries")
    ben = open_page(f"{demo_server.url}/demos/collab?collection=lists-race&list=groceries")
    for page in (ann, ben):
        eventually(lambda: list_shown(page) == [("milk", False)])  # noqa: B023 (called at once)
    patches = [r for r in ann.sent if "format=patch" in r.url]
    assert patches  # the pages watch with format=patch

    # Both edit the list as it is at revision R; Ben's edit is held on its way, Ann's lands first.
    hold = Hold(ben, "/v1/lists-race/groceries")
    add(ben, "eggs")
    hold.wait()
    sent = hold.held[0].request
    assert sent.method == "PATCH" and sent.headers["content-type"] == "application/json-patch+json"
    add(ann, "bread")
    eventually(lambda: list_shown(ben) == [("milk", False), ("bread", False)])
    hold.release()
    # Ben's edit was refused (412) and made again on the newer list: both items are there.
    expected = [("milk", False), ("bread", False), ("eggs", False)]
    for page in (ann, ben):
        eventually(lambda: list_shown(page) == expected)  # noqa: B023 (called at once)
    assert list_stored(url) == expected
    assert ben.inner_text("#retried") == "1" and ann.inner_text("#retried") == "0"

    # A burst of edits from both pages, none waiting for the other's: they all land, and both
    # pages end on the list the server holds.
    ann.click('#items li:has-text("milk") input[type="checkbox"]')
    ben.click('#items li:has-text("bread") button')
    add(ann, "butter")
    add(ben, MARKUP)
    add(ann, "jam")
    want = {("milk", True), ("eggs", False), ("butter", False), (MARKUP, False), ("jam", False)}
    eventually(lambda: set(list_stored(url)) == want and len(list_stored(url)) == 5)
    stored = list_stored(url)
    for page in (ann, ben):
        eventually(lambda: list_shown(page) == stored)  # noqa: B023 (called at once)
    assert ann.locator("#items img").count() == 0 and ann.evaluate("window.pwned") is None


def test_a_page_resumes_across_a_restart_and_lists_again_past_the_history_horizon(
    make_server: Any, open_page: Any
):
    # The list page holds a copy kept by merge patches: it must resume exactly where it was
    # (Last-Event-ID) or, when the history has moved past it, start again from a whole list.
    server: ServerProcess = make_server(
        sse_retry_ms=100, shutdown_grace=0.5, history_events=5, compaction_interval=0.1
    )
    url = f"{server.url}/v1/lists/groceries"
    httpx.put(url, json={"title": "Groceries", "items": [{"id": "m", "text": "milk", "done": False}]})
    page = open_page(f"{server.url}/demos/collab")
    eventually(lambda: list_shown(page) == [("milk", False)])

    def append(text: str) -> None:
        op = [{"op": "add", "path": "/items/-", "value": {"id": text, "text": text, "done": False}}]
        answer = httpx.patch(url, json=op, headers={"Content-Type": "application/json-patch+json"})
        assert answer.status_code == 200, answer.text

    server.restart()
    append("eggs")
    eventually(lambda: list_shown(page) == [("milk", False), ("eggs", False)])
    assert lists(page) == 1  # resumed, not listed again
    assert any(r.response() is not None and "last-event-id" in r.all_headers() for r in page.sent)

    page.context.set_offline(True)
    server.restart()
    for text in ("a", "b", "c", "d", "e", "f", "g", "h"):
        append(text)
    time.sleep(0.5)  # compactions: the page's revision is past the horizon now
    page.context.set_offline(False)
    eventually(lambda: lists(page) == 2, timeout=15)
    eventually(lambda: list_shown(page) == list_stored(url) and len(list_stored(url)) == 10)
    assert page.get_attribute("#state", "data-state") == "live"


# -- Chat --------------------------------------------------------------------------------------


def messages_shown(page: Any) -> list[tuple[str, str]]:
    """The messages as the page shows them, in order: (author, text)."""
    shown = page.evaluate(
        """() => [...document.querySelectorAll('#messages li')].map(
            (li) => [li.querySelector('b').textContent, li.lastChild.textContent])"""
    )
    return [(author, text) for author, text in shown]


def present(page: Any) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#present li')].map((li) => li.dataset.user)")


def say(page: Any, text: str) -> None:
    page.fill("#send input[name=text]", text)
    page.click("#send button")


def test_two_people_chat_see_each_other_come_type_and_go_and_no_message_is_lost_or_doubled(
    make_server: Any, open_page: Any
):
    server: ServerProcess = make_server(sse_retry_ms=100, shutdown_grace=0.5, lease_sweep_interval=0.2)
    room = f"{server.url}/demos/chat?room=r1&ttl=2"
    ann = open_page(f"{room}&user=ann")
    ben = open_page(f"{room}&user=ben")
    # Presence: each page's lease, renewed while it is open.
    for page in (ann, ben):
        eventually(lambda: present(page) == ["ann", "ben"])  # noqa: B023 (called at once)
        eventually(lambda: page.get_attribute("#state", "data-state") == "live")  # noqa: B023 (called at once)
    assert ann.inner_text("#present") == "ann (you)\nben"

    # Typing: a lease of its own, which lapses by itself when Ben stops typing without sending.
    ben.type("#send input[name=text]", "hm")
    eventually(lambda: ann.inner_text("#typing") == "ben typing…")
    assert ben.inner_text("#typing") == ""  # one's own typing is not shown
    eventually(lambda: ann.inner_text("#typing") == "", timeout=6)

    say(ann, "hello")
    eventually(lambda: messages_shown(ben) == [("ann", "hello")])
    say(ben, MARKUP)
    want = [("ann", "hello"), ("ben", MARKUP)]
    for page in (ann, ben):
        eventually(lambda: messages_shown(page) == want)  # noqa: B023 (called at once)
    assert ann.locator("#messages img").count() == 0 and ann.evaluate("window.pwned") is None

    # A message sent while the server is down is sent again until it lands, once; the pages
    # resume where they were and show every message once, in order.
    server.stop()
    say(ann, "while it was down")
    time.sleep(0.5)
    server.start()
    want.append(("ann", "while it was down"))
    for page in (ann, ben):
        eventually(lambda: messages_shown(page) == want, timeout=15)  # noqa: B023 (called at once)
    say(ben, "after")
    want.append(("ben", "after"))
    for page in (ann, ben):
        eventually(lambda: messages_shown(page) == want)  # noqa: B023 (called at once)
    stored = httpx.get(f"{server.url}/v1/messages", params={"filter": 'room="r1"'}).json()["items"]
    assert sorted((m["data"]["author"], m["data"]["text"]) for m in stored) == sorted(want)

    # Ben's page goes away without a word (offline: no renewal, no goodbye): his presence lapses
    # and the server deletes it, which Ann's page sees.
    ben.context.set_offline(True)
    eventually(lambda: present(ann) == ["ann"], timeout=8)
    events, since = [], 0
    while True:  # the lease's log, from the start: each long-poll answers what is ready
        answer = httpx.get(
            f"{server.url}/v1/presence/r1.ben", params={"watch": "longpoll", "since": since, "timeout": 0.1}
        ).json()
        if not answer["events"]:
            break
        events += answer["events"]
        since = answer["revision"]
    assert events[-1]["type"] == "DELETED" and events[-1]["expired"] is True
