"""`format=patch` (MODIFIED as a merge patch) and `conflate=true` (the newest state per resource
for a watcher that is behind), through the real server on every transport and the client."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from tests.support.watching import longpoll, ndjson, sse
from tests.support.ws import recv, send, ws_url
from watchroute.client import AsyncClient, LiveCollection

BIG = {"name": "a resource with a long name", "owner": {"id": "u1", "team": "blue"}, "n": 1}


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386, written here again so that the test does not trust the code it checks."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def put(c: httpx.Client | httpx.AsyncClient, coll: str, id: str, data: dict[str, Any]) -> Any:
    return c.put(f"/v1/{coll}/{id}", json=data)


class Copy:
    """What a client reconstructs from events: id -> (revision, data)."""

    def __init__(self) -> None:
        self.state: dict[str, tuple[int, dict[str, Any]]] = {}

    def apply(self, event: dict[str, Any]) -> None:
        kind, revision = event["type"], event["revision"]
        if kind == "BOOKMARK":
            return
        if "patch" in event:
            assert kind == "MODIFIED" and "object" not in event
            assert event["id"] in self.state, f"a patch for {event['id']} whose state is not held"
            held = self.state[event["id"]][1]
            self.state[event["id"]] = (revision, merge(held, event["patch"]))
            return
        obj = event["object"]
        assert obj["revision"] == revision, "an event carries the state of its own revision"
        if kind == "DELETED":
            self.state.pop(obj["id"], None)
        else:
            self.state[obj["id"]] = (revision, obj["data"])


def listed(c: httpx.Client, coll: str, flt: str | None = None) -> dict[str, tuple[int, dict[str, Any]]]:
    params = {"filter": flt} if flt else {}
    return {r["id"]: (r["revision"], r["data"]) for r in c.get(f"/v1/{coll}", params=params).json()["items"]}


# -- format=patch ----------------------------------------------------------------------------


def _write_patch_story(c: httpx.Client, coll: str) -> list[int]:
    revs = [put(c, coll, "a", BIG).json()["revision"]]
    revs.append(put(c, coll, "a", {**BIG, "n": 2}).json()["revision"])  # a small change: a patch
    revs.append(put(c, coll, "a", {"name": BIG["name"], "owner": {"id": "u1"}}).json()["revision"])
    revs.append(put(c, coll, "a", {**BIG, "n": None}).json()["revision"])  # a null: no merge patch
    revs.append(c.delete(f"/v1/{coll}/a").json()["revision"])
    return revs


def _check_patch_story(events: list[dict[str, Any]], revs: list[int]) -> None:
    changes = [e for e in events if e["type"] != "BOOKMARK"]
    assert [e["revision"] for e in changes] == revs
    added, small, removal, with_null, deleted = changes
    assert added["type"] == "ADDED" and added["object"]["data"] == BIG
    assert small == {"type": "MODIFIED", "revision": revs[1], "id": "a", "patch": {"n": 2}}
    assert removal["patch"] == {"owner": {"team": None}, "n": None}
    assert with_null["type"] == "MODIFIED" and with_null["object"]["data"] == {**BIG, "n": None}
    assert deleted["type"] == "DELETED" and deleted["object"]["data"] == {**BIG, "n": None}
    copy = Copy()
    for e in changes[:-1]:
        copy.apply(e)
    assert copy.state["a"] == (revs[3], {**BIG, "n": None})


@pytest.mark.parametrize("transport", ["sse", "ndjson", "longpoll", "ws", "ws-multiplexed"])
async def test_modified_carries_a_merge_patch_on_every_transport(server, client, coll, transport):
    base = client.get(f"/v1/{coll}").json()["revision"]
    revs = _write_patch_story(client, coll)
    params = {"since": base, "format": "patch", "timeout": 1}
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        if transport == "sse":
            async for sse_id, event in sse(c, f"/v1/{coll}", params):
                if event["type"] != "BOOKMARK":
                    assert sse_id == str(event["revision"])  # patches are resume points too
                events.append(event)
        elif transport == "ndjson":
            events = [e async for e in ndjson(c, f"/v1/{coll}", params)]
        elif transport == "longpoll":
            events, _ = await longpoll(c, f"/v1/{coll}", params)
        elif transport == "ws":
            async with connect(ws_url(server, f"/v1/{coll}?since={base}&format=patch")) as ws:
                events = [await recv(ws) for _ in revs]
        else:
            async with connect(ws_url(server, "/v1/_watch")) as ws:
                await send(
                    ws, {"op": "subscribe", "sub": "s", "collection": coll, "since": base, "format": "patch"}
                )
                assert (await recv(ws))["type"] == "SUBSCRIBED"
                events = [await recv(ws) for _ in revs]
                assert all(e.pop("sub") == "s" for e in events)
    _check_patch_story(events, revs)


async def test_live_events_carry_patches_and_full_format_is_unchanged(server, client, coll):
    put(client, coll, "a", BIG)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        stream = ndjson(c, f"/v1/{coll}", {"format": "patch", "heartbeat": 1})
        plain = ndjson(c, f"/v1/{coll}", {"heartbeat": 1})
        first = asyncio.ensure_future(anext(stream))
        second = asyncio.ensure_future(anext(plain))
        await asyncio.sleep(0.3)  # both parked: the change is pushed to them live
        written = put(client, coll, "a", {**BIG, "n": 5}).json()
        assert await first == {
            "type": "MODIFIED",
            "revision": written["revision"],
            "id": "a",
            "patch": {"n": 5},
        }
        assert (await second)["object"] == written
        await stream.aclose()
        await plain.aclose()


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"format": "xml"}, "format"),
        ({"format": ""}, "format"),
        ({"conflate": "maybe"}, "conflate"),
    ],
)
def test_bad_values_are_400_problems(client, coll, params, detail):
    for watch in ("true", "longpoll"):
        r = client.get(f"/v1/{coll}", params={"watch": watch, **params})
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["reason"] == "BadParameter"
        assert detail in r.json()["detail"]
    assert client.get(f"/v1/{coll}").json()["revision"] == 0  # nothing was written


async def test_bad_values_in_a_subscribe_end_that_subscription_only(server, coll):
    async with connect(ws_url(server, "/v1/_watch")) as ws:
        await send(ws, {"op": "subscribe", "sub": "f", "collection": coll, "format": "diff"})
        error = await recv(ws)
        assert error["sub"] == "f" and error["type"] == "ERROR"
        assert error["error"]["status"] == 400 and "format" in error["error"]["detail"]
        await send(ws, {"op": "subscribe", "sub": "c", "collection": coll, "conflate": "sometimes"})
        error = await recv(ws)
        assert error["sub"] == "c" and "conflate" in error["error"]["detail"]
        await send(
            ws, {"op": "subscribe", "sub": "ok", "collection": coll, "format": "patch", "conflate": True}
        )
        assert (await recv(ws))["type"] == "SUBSCRIBED"
    async with connect(ws_url(server, f"/v1/{coll}?format=diff")) as ws:
        assert (await recv(ws))["error"]["reason"] == "BadParameter"


# -- conflate=true ---------------------------------------------------------------------------


def test_a_watcher_behind_gets_the_newest_state_per_resource(client, coll):
    base = client.get(f"/v1/{coll}").json()["revision"]
    put(client, coll, "gone", {"n": 0})
    put(client, coll, "kept", {"n": 0})
    start = client.get(f"/v1/{coll}").json()["revision"]
    for n in range(1, 4):
        for id in ("kept", "new", "gone"):
            put(client, coll, id, {"n": n})
    client.put(f"/v1/{coll}/flash", json={"n": 9})
    client.delete(f"/v1/{coll}/flash")  # came and went: nothing
    last_gone = client.delete(f"/v1/{coll}/gone").json()["revision"]
    r = client.get(f"/v1/{coll}", params={"watch": "longpoll", "since": start, "conflate": "true"})
    events = r.json()["events"]
    server = listed(client, coll)
    assert [(e["type"], e["object"]["id"], e["revision"]) for e in events] == [
        ("MODIFIED", "kept", server["kept"][0]),
        ("ADDED", "new", server["new"][0]),
        ("DELETED", "gone", last_gone),
    ]
    assert [e["object"]["data"] for e in events[:2]] == [{"n": 3}, {"n": 3}]
    # Unconflated, the same watcher gets every change.
    r = client.get(f"/v1/{coll}", params={"watch": "longpoll", "since": base})
    assert len(r.json()["events"]) == last_gone - base


def test_conflated_membership_with_a_filter(client, coll):
    for id in ("stays", "leaves", "returns", "hidden"):
        put(client, coll, id, {"tag": "x" if id != "hidden" else "y", "n": 0})
    start = client.get(f"/v1/{coll}").json()["revision"]
    put(client, coll, "stays", {"tag": "x", "n": 1})
    put(client, coll, "leaves", {"tag": "y", "n": 1})
    put(client, coll, "leaves", {"tag": "y", "n": 2})  # concerns nobody on tag=x
    put(client, coll, "returns", {"tag": "y", "n": 1})
    put(client, coll, "returns", {"tag": "x", "n": 2})
    put(client, coll, "hidden", {"tag": "x", "n": 1})  # enters
    params = {"watch": "longpoll", "since": start, "conflate": "true", "filter": "tag=x"}
    events = client.get(f"/v1/{coll}", params=params).json()["events"]
    got = {e["object"]["id"]: (e["type"], e["object"]["data"]["n"]) for e in events}
    # `returns` left the filter and came back: its run ends at the leave, so the client sees it
    # go and come back (a resume point between the two stays correct, see conflation.py).
    assert got == {
        "stays": ("MODIFIED", 1),
        "leaves": ("DELETED", 1),
        "returns": ("ADDED", 2),
        "hidden": ("ADDED", 1),
    }
    returns = [e["type"] for e in events if e["object"]["id"] == "returns"]
    assert returns == ["DELETED", "ADDED"]
    assert [e["revision"] for e in events] == sorted(e["revision"] for e in events)


def test_a_cut_between_a_leave_and_a_return_loses_nothing(client, coll):
    """x leaves, y changes, x comes back and leaves again. Folded into one DELETED after y, a
    client cut right after y would keep x for ever: resumed from y, x is absent there and at
    the end. So x's run ends at its first leave (conflation.py)."""
    put(client, coll, "x", {"n": 1})
    put(client, coll, "y", {"n": 1})
    start = client.get(f"/v1/{coll}").json()["revision"]
    client.delete(f"/v1/{coll}/x")
    y = put(client, coll, "y", {"n": 2}).json()["revision"]
    put(client, coll, "x", {"n": 3})
    client.delete(f"/v1/{coll}/x")
    params = {"conflate": "true"}
    for cut in (1, 2):  # right after each event
        copy = Copy()
        copy.state = {"x": (1, {"n": 1}), "y": (2, {"n": 1})}
        got, seen = read_until_cut(client, coll, {**params, "since": start}, cut, copy)
        assert seen == cut and got is not None
        catch_up(client, coll, params, got, copy)
        assert copy.state == listed(client, coll) == {"y": (y, {"n": 2})}, f"cut after {cut}"


def test_conflated_patch_watch_sends_whole_objects_while_catching_up(client, coll):
    put(client, coll, "a", BIG)
    start = client.get(f"/v1/{coll}").json()["revision"]
    put(client, coll, "a", {**BIG, "n": 2})
    params = {"watch": "longpoll", "since": start, "conflate": "true", "format": "patch"}
    [event] = client.get(f"/v1/{coll}", params=params).json()["events"]
    assert event["type"] == "MODIFIED" and event["object"]["data"] == {**BIG, "n": 2}


# -- the property: cut anywhere, resume, converge --------------------------------------------

IDS = ["a", "b", "c"]
FILTERS = [None, "tag=x", "n>=3"]
op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(IDS), st.sampled_from(["x", "y"]), st.integers(0, 5)),
    # Deletions as often as writes: resources come and go within what a watcher folds.
    st.tuples(st.just("delete"), st.sampled_from(IDS), st.none(), st.none()),
    st.tuples(st.just("delete"), st.sampled_from(IDS), st.none(), st.none()),
)
_names = itertools.count()


def run_ops(c: httpx.Client, coll: str, ops: list[tuple]) -> None:
    for kind, id, tag, n in ops:
        if kind == "put":
            put(c, coll, id, {**BIG, "tag": tag, "n": n}).raise_for_status()
        else:
            assert c.delete(f"/v1/{coll}/{id}").status_code in (200, 404)


def read_until_cut(
    c: httpx.Client, coll: str, params: dict[str, Any], cut: int, copy: Copy
) -> tuple[int | None, int]:
    """Stream NDJSON from `params`; drop the connection after `cut` change events (or when the
    stream goes quiet). Returns the last revision received, to resume from, and the count."""
    last = None
    # Its own connection: a cut one is not handed back to the pool.
    query = {"watch": "true", "timeout": 0.1, **params}
    with c.stream("GET", f"/v1/{coll}", params=query, headers={"Connection": "close"}) as r:
        assert r.status_code == 200, r.read()
        seen = 0
        for line in r.iter_lines():
            if not line:
                continue
            event = orjson.loads(line)
            assert last is None or event["revision"] >= last
            copy.apply(event)
            last = event["revision"]
            if event["type"] != "BOOKMARK":
                seen += 1
                if seen == cut:
                    break
    return last, seen


def catch_up(c: httpx.Client, coll: str, params: dict[str, Any], resume: int, copy: Copy) -> None:
    """Long-poll from `resume` to the store's revision, applying what comes."""
    target = c.get(f"/v1/{coll}").json()["revision"]
    while resume < target:
        query = {**params, "watch": "longpoll", "since": resume, "timeout": 0.2}
        body = c.get(f"/v1/{coll}", params=query).json()
        for event in body["events"]:
            copy.apply(event)
        resume = body["revision"]


@pytest.fixture(scope="module")
def small_window_server(tmp_path_factory):
    from tests.support.server import ServerProcess

    # A window of 16 changes and 3 events per write: catching up reads the log, and folds are
    # cut at the write limit.
    proc = ServerProcess(
        tmp_path_factory.mktemp("conflate"), window_events=16, max_events_per_write=3
    ).start()
    yield proc
    proc.stop()


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    before=st.lists(op, min_size=3, max_size=12),
    behind=st.lists(op, min_size=1, max_size=40),
    later=st.lists(st.lists(op, max_size=6), max_size=3),
    cuts=st.lists(st.integers(1, 3), max_size=8),
    flt=st.sampled_from(FILTERS),
    patch=st.booleans(),
)
def test_cut_anywhere_and_resume_converges(small_window_server, before, behind, later, cuts, flt, patch):
    coll = f"prop{next(_names)}"
    with httpx.Client(base_url=small_window_server.url, timeout=10) as c:
        run_ops(c, coll, before)
        copy = Copy()
        start = c.get(f"/v1/{coll}", params={"filter": flt} if flt else {}).json()
        for r in start["items"]:
            copy.state[r["id"]] = (r["revision"], r["data"])
        resume = start["revision"]
        run_ops(c, coll, behind)  # the watcher is behind by all of these
        params: dict[str, Any] = {"conflate": "true"}
        if flt:
            params["filter"] = flt
        if patch:
            params["format"] = "patch"
        # Every single cut point of the conflated catch-up: cut there, resume, converge.
        for cut in itertools.count(1):
            cut_copy = Copy()
            cut_copy.state = dict(copy.state)
            got, seen = read_until_cut(c, coll, {**params, "since": resume}, cut, cut_copy)
            if seen < cut:
                break
            assert got is not None
            catch_up(c, coll, params, got, cut_copy)
            assert cut_copy.state == listed(c, coll, flt), f"cut after {cut} events"
        # Several cuts, with more changes while the client is away.
        batches = list(later)
        for cut in cuts:
            got, _ = read_until_cut(c, coll, {**params, "since": resume}, cut, copy)
            resume = got if got is not None else resume
            if batches:
                run_ops(c, coll, batches.pop())
        for ops in batches:
            run_ops(c, coll, ops)
        catch_up(c, coll, params, resume, copy)
        assert copy.state == listed(c, coll, flt)


# -- the client ------------------------------------------------------------------------------


async def next_change(events: Any) -> Any:
    while True:
        event = await asyncio.wait_for(anext(events), 10)
        if event.type != "BOOKMARK":
            return event


@pytest.mark.parametrize("transport", ["sse", "ws", "ndjson", "longpoll"])
async def test_client_applies_patches_and_hands_out_whole_objects(server, coll, transport):
    async with AsyncClient(server.url) as client:
        await client.put(coll, "a", BIG)
        async with client.watch(coll, format="patch", transport=transport, heartbeat=1) as watch:
            events = aiter(watch)
            pending = asyncio.ensure_future(next_change(events))
            await asyncio.sleep(0.5)  # connected, and past its silent listing of the state
            written = await client.put(coll, "a", {**BIG, "n": 7})
            event = await pending
            assert event.type == "MODIFIED" and event.patch == {"n": 7}
            assert event.object == written
            created = await client.put(coll, "b", BIG)
            event = await next_change(events)
            assert event.type == "ADDED" and event.patch is None and event.object == created


async def test_client_without_the_previous_state_lists_again(server, coll):
    async with AsyncClient(server.url) as client:
        start = (await client.put(coll, "a", BIG)).revision
        await client.put(coll, "a", {**BIG, "n": 2})
        # A watch from `since` without `states`: the patch cannot be applied, so it lists again.
        async with client.watch(coll, since=start, format="patch", transport="ndjson", heartbeat=1) as watch:
            kinds = []
            async for event in watch:
                kinds.append(event.type if not event.initial else "initial")
                if event.initial_events_end:
                    break
            assert kinds == ["RESYNC", "initial", "BOOKMARK"]
            assert watch._states is not None and watch._states["a"].data == {**BIG, "n": 2}


@pytest.mark.parametrize(("fmt", "conflate"), [("patch", False), ("full", True), ("patch", True)])
async def test_live_collection_with_patches_and_conflation(server, coll, fmt, conflate):
    async with AsyncClient(server.url) as client:
        for id in IDS:
            await client.put(coll, id, {**BIG, "tag": "x"})
        live = LiveCollection(client, coll, filter="tag=x", format=fmt, conflate=conflate, heartbeat=1)
        async with live:
            assert await live.wait_synced(10)
            last = None
            for n in range(30):
                id = IDS[n % len(IDS)]
                if n % 7 == 6:
                    last = await client.delete(coll, id)
                else:
                    last = await client.put(coll, id, {**BIG, "tag": "x" if n % 3 else "y", "n": n})
            assert last is not None
            assert await live.wait_for_revision(last.revision, 10)
            server_state = {r.id: r for r in (await client.list(coll, filter="tag=x")).items}
            assert dict(live) == server_state
