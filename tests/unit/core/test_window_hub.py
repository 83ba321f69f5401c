"""The in-memory half of the data path: window, hub and watcher cursors, without a server."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchroute.core.change import ADDED, DELETED, MODIFIED, WITHDRAWN, Change, encode
from watchroute.core.filter import compile_filter
from watchroute.core.hub import Hub
from watchroute.core.states import BLOCKED, CLOSED, SYNCED, UNSYNCED
from watchroute.core.watcher import Watcher
from watchroute.core.window import Window
from watchroute.wire import events
from watchroute.wire.events import JSON, NDJSON, SSE, framed


def change(rev: int, id: str = "a", type: str = MODIFIED, data=None, prev=None, coll="c"):
    data = {"n": rev} if data is None else data
    prev_json = None if prev is None else encode(prev)
    return Change(rev, type, coll, id, 1, encode(data), prev_json, 0.0)


def test_window_serves_after_a_revision_and_says_when_it_no_longer_reaches():
    window = Window(capacity=16, revision=0)
    window.append([change(r) for r in range(1, 41)])
    after = window.after(38, 10)
    assert after is not None and [c.revision for c in after] == [39, 40]
    assert window.after(40, 10) == []
    assert window.after(2, 10) is None  # trimmed: the watcher must read the log
    assert window.first_revision <= 25  # keeps at least `capacity`


def test_window_refuses_a_gap():
    window = Window(capacity=16, revision=5)
    with pytest.raises(ValueError, match="gap"):
        window.append([change(7)])


@given(
    id=st.text(min_size=1, max_size=12),
    data=st.dictionaries(
        st.text(max_size=5), st.integers(-(2**53), 2**53) | st.text(max_size=5) | st.none(), max_size=4
    ),
    prev=st.none() | st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
)
def test_event_frames_are_the_event_as_json(id, data, prev):
    """Every framing carries exactly `{"type", "revision", "object": the resource}` as JSON, for
    any id (quotes, control characters, non-ASCII); a withdrawn change shows its previous state."""
    c = Change(7, MODIFIED, "c", id, 3, encode(data), None if prev is None else encode(prev), 0.0)
    resource = {"id": id, "revision": 7, "created_revision": 3, "data": data}
    assert orjson.loads(framed(c, MODIFIED, JSON)) == {
        "type": MODIFIED,
        "revision": 7,
        "object": resource,
    }
    sse = framed(c, ADDED, SSE)
    assert sse.startswith(b"id: 7\ndata: ") and sse.endswith(b"\n\n") and sse.count(b"\n") == 3
    assert orjson.loads(sse[len(b"id: 7\ndata: ") :]) == {"type": ADDED, "revision": 7, "object": resource}
    withdrawn = orjson.loads(framed(c, WITHDRAWN, NDJSON))
    shown = data if prev is None else prev
    assert withdrawn == {"type": DELETED, "revision": 7, "object": {**resource, "data": shown}}


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
    real = events._event_json

    def counted(c, kind):
        calls.append(c)
        return real(c, kind)

    monkeypatch.setattr(events, "_event_json", counted)
    hub, window = Hub(), Window(64, 0)
    pushed: dict[int, list[bytes]] = {}
    watchers = []
    for i in range(50):
        w = Watcher(hub, window, None, "c", None, None, 0)  # type: ignore[arg-type]
        w.push = lambda evs, i=i: pushed.setdefault(i, []).extend(framed(c, k, SSE) for k, c in evs)
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
    pushed: list[int] = []
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
    assert not parked.candidates([change(2, data={"symbol": "nobody"})])


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


def parked(hub: Hub, window: Window, push, flt: str | None = None) -> Watcher:
    """A caught-up watcher of collection "c" whose events go to `push`."""
    w = Watcher(hub, window, None, "c", None, compile_filter(flt) if flt else None, 0)  # type: ignore[arg-type]
    w.push = push
    hub.add(w)
    hub.park(w)
    return w


def parked_crowd(hub: Hub, window: Window, n: int = Hub.GATHER_FROM) -> list[Watcher]:
    return [parked(hub, window, lambda evs: None) for _ in range(n)]


async def test_commits_under_load_are_gathered_into_one_write_per_watcher():
    hub, window = Hub(coalesce=0.05), Window(64, 0)
    writes: list[list[int]] = []
    w = parked(hub, window, lambda evs: writes.append([c.revision for _, c in evs]))
    parked_crowd(hub, window)
    for rev in (1, 2, 3):
        window.append([change(rev)])
        hub.publish([change(rev)])
    # The first commit after a quiet spell goes out at once; the next ones wait their turn.
    assert writes == [[1]]
    await asyncio.sleep(0.1)
    assert writes == [[1], [2, 3]]
    assert w.cursor == 3
    await asyncio.sleep(0.1)  # quiet again: the next commit is not held back
    window.append([change(4)])
    hub.publish([change(4)])
    assert writes == [[1], [2, 3], [4]]


async def test_a_gathered_commit_is_not_held_longer_than_the_coalescing_time():
    loop = asyncio.get_running_loop()
    hub, window = Hub(coalesce=0.05), Window(64, 0)
    arrived: dict[int, float] = {}
    parked(hub, window, lambda evs: arrived.update((c.revision, loop.time()) for _, c in evs))
    parked_crowd(hub, window)
    committed = {}
    for rev in range(1, 6):
        window.append([change(rev)])
        committed[rev] = loop.time()
        hub.publish([change(rev)])
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert sorted(arrived) == [1, 2, 3, 4, 5]
    assert max(arrived[r] - committed[r] for r in arrived) < 0.05 + 0.03


def slow_delivery(hub: Hub, window: Window, seconds: float) -> tuple[list[tuple[list[int], float]], float]:
    """A crowd parked, of which one watcher's first write takes `seconds` (a slow machine, a
    large crowd); commit 1 delivered. Every write to that watcher, with when it was made, and
    when the delivery of commit 1 ended."""
    loop = asyncio.get_running_loop()
    writes: list[tuple[list[int], float]] = []

    def push(evs):
        if not writes:
            time.sleep(seconds)
        writes.append(([c.revision for _, c in evs], loop.time()))

    parked(hub, window, push)
    parked_crowd(hub, window)
    window.append([change(1)])
    hub.publish([change(1)])
    return writes, loop.time()


async def test_after_a_slow_delivery_commits_are_gathered_for_as_long_as_it_took():
    # A window of 5 ms after a delivery of 45 ms would let each commit that comes every 12 ms
    # go out on its own, each one another 45 ms delivery.
    hub, window = Hub(coalesce=0.005), Window(64, 0)
    writes, ended = slow_delivery(hub, window, 0.045)
    for rev in (2, 3, 4):
        window.append([change(rev)])
        hub.publish([change(rev)])
        await asyncio.sleep(0.012)
    await asyncio.sleep(0.08)
    assert [revs for revs, _ in writes] == [[1], [2, 3, 4]]
    assert 0.045 - 0.005 <= writes[1][1] - ended < 0.045 + 0.04


@pytest.mark.parametrize(
    ("coalesce", "took", "held"),
    [
        (0.005, 0.0, 0.005),  # a quick delivery: the coalescing time
        (0.005, 0.04, 0.04),  # as long as the delivery took
        (0.005, 0.2, Hub.GATHER_AT_MOST),  # a one-off slow delivery does not hold the next as long
        (0.1, 0.2, 0.1),  # unless the coalescing time is longer still
    ],
)
async def test_the_next_commit_is_held_as_long_as_the_last_delivery_took(coalesce, took, held):
    hub, window = Hub(coalesce=coalesce), Window(64, 0)
    _, ended = slow_delivery(hub, window, took)
    window.append([change(2)])
    hub.publish([change(2)])
    assert hub._flush is not None
    assert held - 0.002 <= hub._flush.when() - ended <= held + 0.01
    hub._flush.cancel()


async def test_gathered_changes_go_out_at_once_when_there_are_as_many_as_a_write_takes():
    # A push stays about as large as a write the watcher would make itself.
    hub, window = Hub(coalesce=0.05, max_gathered=3), Window(64, 0)
    writes: list[list[int]] = []
    parked(hub, window, lambda evs: writes.append([c.revision for _, c in evs]))
    parked_crowd(hub, window)
    for rev in range(1, 6):
        window.append([change(rev)])
        hub.publish([change(rev)])
    assert writes == [[1], [2, 3, 4]]  # no waiting: 5 is held until the window ends
    await asyncio.sleep(0.1)
    assert writes == [[1], [2, 3, 4], [5]]


async def test_at_shutdown_the_changes_being_gathered_are_delivered_before_the_streams_end():
    hub, window = Hub(coalesce=0.05), Window(64, 0)
    writes: list[list[int]] = []
    w = parked(hub, window, lambda evs: writes.append([c.revision for _, c in evs]))
    parked_crowd(hub, window)
    for rev in (1, 2):
        window.append([change(rev)])
        hub.publish([change(rev)])
    assert writes == [[1]]
    hub.close_all()
    assert writes == [[1], [2]]
    assert w.closed


async def test_a_delivery_to_few_watchers_is_not_held_back():
    # Holding back costs a timer wake-up: it pays only when a delivery reaches many sockets.
    hub, window = Hub(coalesce=0.05), Window(64, 0)
    writes: list[list[int]] = []
    parked(hub, window, lambda evs: writes.append([c.revision for _, c in evs]))
    for rev in (1, 2, 3):
        window.append([change(rev)])
        hub.publish([change(rev)])
    assert writes == [[1], [2], [3]]


def test_filtered_watchers_are_matched_only_against_the_changes_that_concern_them():
    hub, window = Hub(), Window(64, 0)
    got: dict[str, list[int]] = {}
    for symbol in ("A", "B"):
        parked(
            hub,
            window,
            lambda evs, s=symbol: got.setdefault(s, []).extend(c.revision for _, c in evs),
            f"symbol={symbol}",
        )
    batch = [
        change(1, id="x", data={"symbol": "A"}, prev={"symbol": "A"}),
        change(2, id="y", data={"symbol": "B"}, prev={"symbol": "C"}),
        change(3, id="x", data={"symbol": "B"}, prev={"symbol": "A"}),  # leaves A, joins B
        change(4, id="z", data={"symbol": "C"}, prev={"symbol": "C"}),
    ]
    window.append(batch)
    candidates = hub._parked["c"].candidates(batch)
    assert sorted(len(concerning) for concerning in candidates.values()) == [2, 2]
    hub.publish(batch)
    assert got == {"A": [1, 3], "B": [2, 3]}


async def test_a_parked_watcher_skips_what_the_hub_found_not_to_concern_it():
    # Its heartbeat then reads nothing again: 1000 watchers with different filters must not
    # each scan every change when their timers fire.
    classified = []

    class Counting(Watcher):
        __slots__ = ()

        def classify(self, change):
            classified.append(change.revision)
            return super().classify(change)

    hub, window = Hub(), Window(64, 0)
    w = Counting(hub, window, None, "c", None, compile_filter("symbol=A"), 0)  # type: ignore[arg-type]
    with w:
        task = asyncio.create_task(w.next(limit=100, timeout=0.2))
        await asyncio.sleep(0)
        batch = [change(r, id=f"x{r}", data={"symbol": "B"}, prev={"symbol": "B"}) for r in (1, 2, 3)]
        window.append(batch)
        hub.publish(batch)
        assert await task == []
        assert w.cursor == 3 and classified == []
        # Woken for a change that concerns it, it still gets that change.
        task = asyncio.create_task(w.next(limit=100, timeout=2))
        await asyncio.sleep(0)
        mine = [change(4, id="y", data={"symbol": "A"}, prev={"symbol": "A"})]
        window.append(mine)
        hub.publish(mine)
        assert [c.revision for _, c in await task] == [4]


async def test_a_watcher_is_synced_while_parked_blocked_while_its_socket_pushes_back():
    """The named states: pushes reach a SYNCED watcher only; a BLOCKED one is woken instead and
    gets pushes again once unblocked; a CLOSED one gets nothing."""
    hub, window = Hub(), Window(64, 0)
    w = Watcher(hub, window, None, "c", None, None, 0)  # type: ignore[arg-type]
    hub.add(w)
    pushed: list[int] = []
    w.sync(lambda evs: pushed.extend(c.revision for _, c in evs))
    assert w.state == UNSYNCED and w.push is not None
    hub.park(w)
    assert w.state == SYNCED

    def commit(rev: int) -> None:
        window.append([change(rev)])
        hub.publish([change(rev)])

    commit(1)
    assert pushed == [1] and w.cursor == 1 and w.state == SYNCED
    w.block()
    assert w.state == BLOCKED and w.push is None
    commit(2)
    assert pushed == [1], "nothing is pushed to a blocked watcher: it is woken to read"
    assert not hub.is_parked(w) and w.state == BLOCKED
    w.unblock()
    assert w.state == UNSYNCED and w.push is not None
    hub.park(w)
    commit(3)
    assert pushed == [1, 3] and w.state == SYNCED
    w.close()
    assert w.state == CLOSED and w.closed and w.push is None
    w.unblock()
    w.sync(lambda evs: pushed.extend(c.revision for _, c in evs))
    assert w.state == CLOSED and w.push is None, "closed is final"
