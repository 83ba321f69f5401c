"""The in-memory half of the data path: window, hub and watcher cursors, without a server."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchroute import events
from watchroute.events import ADDED, DELETED, MODIFIED, SSE, Change, encode
from watchroute.filter import compile_filter
from watchroute.hub import Hub
from watchroute.watcher import Watcher
from watchroute.window import Window


def change(rev: int, id: str = "a", type: str = MODIFIED, data=None, prev=None, coll="c"):
    data = {"n": rev} if data is None else data
    prev_json = None if prev is None else encode(prev)
    return Change(rev, type, coll, id, 1, encode(data), prev_json, 0.0)


def test_window_serves_after_a_revision_and_says_when_it_no_longer_reaches():
    window = Window(capacity=16, revision=0)
    window.append([change(r) for r in range(1, 41)])
    assert [c.revision for c in window.after(38, 10)] == [39, 40]
    assert window.after(40, 10) == []
    assert window.after(2, 10) is None  # trimmed: the watcher must read the log
    assert window.first_revision <= 25  # keeps at least `capacity`


def test_window_refuses_a_gap():
    window = Window(capacity=16, revision=5)
    with pytest.raises(ValueError, match="gap"):
        window.append([change(7)])


def test_filtered_classification_follows_membership():
    hub, window = Hub(), Window(16, 0)
    w = Watcher(hub, window, None, "c", None, compile_filter("state=open"), 0)  # type: ignore[arg-type]
    assert w.classify(change(1, type=ADDED, data={"state": "open"})) == ADDED
    assert w.classify(change(2, data={"state": "open"}, prev={"state": "shut"})) == ADDED
    assert w.classify(change(3, data={"state": "open"}, prev={"state": "open"})) == MODIFIED
    assert w.classify(change(4, data={"state": "shut"}, prev={"state": "open"})) == DELETED
    assert w.classify(change(5, data={"state": "shut"}, prev={"state": "shut"})) is None
    deleted = change(6, type=DELETED, data={"state": "open"}, prev={"state": "open"})
    assert w.classify(deleted) == DELETED
    assert w.classify(change(7, data={"state": "open"}, coll="other")) is None


async def test_each_event_is_encoded_once_for_all_watchers(monkeypatch):
    calls = []
    real = events.encode
    monkeypatch.setattr(events, "encode", lambda v: calls.append(v) or real(v))
    hub, window = Hub(), Window(64, 0)
    pushed: dict[int, list[bytes]] = {}
    watchers = []
    for i in range(50):
        w = Watcher(hub, window, None, "c", None, None, 0)  # type: ignore[arg-type]
        w.push = lambda evs, i=i: pushed.setdefault(i, []).extend(c.framed(k, SSE) for k, c in evs)
        hub.add(w)
        hub.park(w)
        watchers.append(w)
    batch = [change(r) for r in (1, 2, 3)]
    window.append(batch)
    hub.publish(batch)
    assert len(calls) == 3, "one encoding per event, whatever the number of watchers"
    assert all(len(frames) == 3 for frames in pushed.values()) and len(pushed) == 50
    assert all(w.cursor == 3 for w in watchers)


async def test_a_parked_watcher_without_push_is_woken_once_per_commit():
    hub, window = Hub(), Window(64, 0)
    w = Watcher(hub, window, None, "c", None, None, 0)  # type: ignore[arg-type]
    with w:
        task = asyncio.create_task(w.next(limit=100, timeout=5))
        await asyncio.sleep(0)
        batch = [change(1), change(2)]
        window.append(batch)
        hub.publish(batch)
        got = await asyncio.wait_for(task, 1)
    assert [c.revision for _, c in got] == [1, 2]


async def test_a_watcher_ahead_of_the_window_gets_nothing_twice():
    # Opened from a snapshot at revision 2 that this instance had not seen yet.
    hub, window = Hub(), Window(64, 0)
    pushed = []
    w = Watcher(hub, window, None, "c", None, None, 2)  # type: ignore[arg-type]
    w.push = lambda evs: pushed.extend(c.revision for _, c in evs)
    hub.add(w)
    hub.park(w)
    batch = [change(1), change(2), change(3)]
    window.append(batch)
    hub.publish(batch)
    assert pushed == [3]


def test_equality_filters_are_indexed_not_tested_one_by_one():
    hub = Hub()
    window = Window(64, 0)
    watchers = [
        Watcher(hub, window, None, "c", None, compile_filter(f"symbol=S{i}"), 0)  # type: ignore[arg-type]
        for i in range(1000)
    ]
    for w in watchers:
        hub.park(w)
    parked = hub._parked["c"]
    moved = change(1, data={"symbol": "S7"}, prev={"symbol": "S3"})
    assert set(parked.candidates([moved])) == {watchers[7], watchers[3]}
    assert parked.candidates([change(2, data={"symbol": "nobody"})]) == []


values = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.floats(-2, 2), st.sampled_from(["a", "1"])
)
documents = st.dictionaries(st.sampled_from(["k", "n"]), values, max_size=2)
filters = st.sampled_from(["k=1", "k=true", "k=a", "k=null", "k=1.0", "n!=1", "k=1,n=2", "k", ""])


@given(st.lists(st.tuples(filters, st.booleans()), min_size=1, max_size=8), documents, documents)
def test_index_candidates_include_every_concerned_watcher(specs, before, after):
    hub, window = Hub(), Window(64, 0)
    watchers = []
    for text, single in specs:
        flt = compile_filter(text) if text else None
        w = Watcher(hub, window, None, "c", "a" if single else None, flt, 0)  # type: ignore[arg-type]
        hub.park(w)
        watchers.append(w)
    c = change(1, data=after, prev=before)
    candidates = set(hub._parked["c"].candidates([c]))
    assert {w for w in watchers if w.classify(c) is not None} <= candidates
    for w in watchers:
        hub.unpark(w)
    assert "c" not in hub._parked
