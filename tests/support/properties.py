"""The watch property's scenario (tests/e2e/test_watch_properties.py, and on several PostgreSQL
instances in test_postgres_instances.py): writers run concurrently, watchers on every transport
disconnect at random points and resume from the last revision they saw, and each must receive
exactly what the writers' acknowledgements say the log holds."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import strategies as st

from watchroute.core.filter import compile_filter

IDS = ["a", "b", "c", "d"]
TAGS = ["x", "y"]
FILTERS = [None, "tag=x", "n>=5", "tag in (x,y),n<3"]
# The writes that end a scenario, after all the others: every filter matches one of them, so
# each watcher knows it has everything once it sees the last that matches its filter, instead
# of waiting for a heartbeat's bookmark (or a long-poll's timeout) to pass the end.
SENTINELS = [("put", "zz-end-low", "x", 1), ("put", "zz-end-high", "x", 9)]
END = object()  # what a watcher's step gives once its end is known and reached
_collections = itertools.count()

write_op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(IDS), st.sampled_from(TAGS), st.integers(0, 9)),
    st.tuples(st.just("patch"), st.sampled_from(IDS), st.sampled_from(TAGS), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.sampled_from(IDS), st.none(), st.none()),
    st.tuples(st.just("batch"), st.sampled_from(IDS), st.sampled_from(TAGS), st.integers(0, 9)),
)
watcher = st.fixed_dictionaries(
    {
        "transport": st.sampled_from(["sse", "ndjson", "longpoll"]),
        "filter": st.sampled_from(FILTERS),
        "start": st.sampled_from(["base", "zero"]),
        "cuts": st.lists(st.integers(1, 6), max_size=4),
    }
)


@dataclass
class Ack:
    revision: int
    id: str
    data: dict[str, Any]
    deleted: bool


@dataclass
class Watch:
    since: int
    spec: dict[str, Any]
    got: list[dict[str, Any]] = field(default_factory=list)


async def write(c: httpx.AsyncClient, coll: str, op: tuple, acks: list[Ack]) -> None:
    kind, id, tag, n = op
    if kind == "put":
        r = await c.put(f"/v1/{coll}/{id}", json={"tag": tag, "n": n})
    elif kind == "patch":
        r = await c.patch(
            f"/v1/{coll}/{id}",
            json={"tag": tag, "n": n},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if r.status_code == 404:
            return
    elif kind == "delete":
        r = await c.delete(f"/v1/{coll}/{id}")
        if r.status_code == 404:
            return
    else:
        ops = [
            {"op": "put", "collection": coll, "id": id, "data": {"tag": tag, "n": n}},
            {"op": "put", "collection": coll, "id": IDS[(IDS.index(id) + 1) % 4], "data": {"n": n}},
        ]
        r = await c.post("/v1/_batch", json={"ops": ops})
        r.raise_for_status()
        for result in r.json()["results"]:
            acks.append(Ack(result["revision"], result["id"], result["data"], False))
        return
    r.raise_for_status()
    body = r.json()
    acks.append(Ack(body["revision"], body["id"], body["data"], kind == "delete"))


def expected_events(acks: list[Ack], since: int, flt: str | None) -> list[tuple]:
    """Replay the acknowledged changes in revision order; classify as a watcher must."""
    match = compile_filter(flt).matches if flt else (lambda _: True)
    state: dict[str, dict[str, Any]] = {}
    out = []
    for ack in acks:
        prev = state.get(ack.id)
        kind: str | None
        if ack.deleted:
            state.pop(ack.id, None)
            kind = "DELETED"
        else:
            state[ack.id] = ack.data
            kind = "MODIFIED" if prev is not None else "ADDED"
        before = prev is not None and match(prev)
        after = not ack.deleted and match(ack.data)
        if flt:
            kind = ("MODIFIED" if before else "ADDED") if after else ("DELETED" if before else None)
        if kind and ack.revision > since:
            out.append((kind, ack.revision, ack.id, ack.data))
    return out


def ends(acks: list[Ack], sentinels: int) -> dict[str | None, int]:
    """For each filter, the revision after which its watcher has nothing more to get: the last
    of the scenario's final `sentinels` acknowledged writes that it matches."""
    last = acks[-sentinels:]
    out = {}
    for flt in FILTERS:
        match = compile_filter(flt).matches if flt else (lambda _: True)
        out[flt] = max((a.revision for a in last if match(a.data)), default=last[-1].revision)
    return out


async def run_watch(
    clients: httpx.AsyncClient | list[httpx.AsyncClient],
    coll: str,
    w: Watch,
    stop_at: asyncio.Future[dict[str | None, int]],
) -> None:
    """Read until the end of the scenario for this watcher's filter, cutting the connection
    after each of `cuts` events and resuming from the last revision seen (event or bookmark).
    Given several clients (instances on one database), each connection goes to the next
    instance."""
    rotation = itertools.cycle(clients if isinstance(clients, list) else [clients])
    spec, resume = w.spec, w.since
    params: dict[str, Any] = {"heartbeat": 1}
    if spec["filter"]:
        params["filter"] = spec["filter"]
    cuts = list(spec["cuts"])
    flt = spec["filter"]

    def at_end() -> bool:
        return stop_at.done() and resume >= stop_at.result()[flt]

    async def unless_ended(step: Awaitable[Any]) -> Any:
        """`step`'s result, or END once the scenario's end for this filter is known and already
        read: the last event can arrive before its write is acknowledged, and then nothing more
        (neither an event nor a long-poll's answer) would come until a heartbeat or a timeout."""
        task = asyncio.ensure_future(step)
        if not stop_at.done():
            await asyncio.wait({task, stop_at}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and at_end():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return END
        return await task

    while True:
        budget = cuts.pop(0) if cuts else None
        seen = 0
        c = next(rotation)
        if spec["transport"] == "longpoll":
            query = {**params, "watch": "longpoll", "since": resume, "timeout": 2}
            r = await unless_ended(c.get(f"/v1/{coll}", params=query))
            if r is END:
                return
            r.raise_for_status()
            body = r.json()
            for event in body["events"]:
                w.got.append(event)
            resume = body["revision"]
            if at_end():
                return
            continue
        if spec["transport"] == "sse":
            # An EventSource keeps its first URL and resumes with Last-Event-ID.
            request = c.stream(
                "GET",
                f"/v1/{coll}",
                params={**params, "watch": "true", "since": w.since},
                headers={"Accept": "text/event-stream", "Last-Event-ID": str(resume)},
            )
        else:
            request = c.stream("GET", f"/v1/{coll}", params={**params, "watch": "true", "since": resume})
        async with request as r:
            r.raise_for_status()
            lines = aiter(r.aiter_lines())
            while (line := await unless_ended(anext(lines, None))) is not None:
                if line is END:
                    return
                if spec["transport"] == "sse":
                    if not line.startswith("data: "):
                        continue
                    line = line[6:]
                if not line:
                    continue
                event = json.loads(line)
                resume = event["revision"]
                if event["type"] != "BOOKMARK":
                    w.got.append(event)
                    seen += 1
                if at_end():
                    return
                if budget is not None and seen >= budget:
                    break  # drop the connection mid-stream


async def scenario(url: str | list[str], ops: list[tuple], writers: int, watches: list[dict]) -> None:
    """Against one server, or several on one database: then writers and watchers start on
    different instances, and every resumption goes to the next one."""
    urls = url if isinstance(url, list) else [url]
    coll = f"p{next(_collections)}"
    limits = httpx.Limits(max_connections=100)
    async with contextlib.AsyncExitStack() as stack:
        cs = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=20, limits=limits))
            for u in urls
        ]
        c = cs[0]
        base = (await c.get(f"/v1/{coll}")).json()["revision"]
        stop_at: asyncio.Future[dict[str | None, int]] = asyncio.get_running_loop().create_future()
        ws = [Watch(0 if s["start"] == "zero" else base, s) for s in watches]
        tasks = [asyncio.create_task(run_watch(cs[i:] + cs[:i], coll, w, stop_at)) for i, w in enumerate(ws)]
        acks: list[Ack] = []

        async def writer(share: list[tuple], c: httpx.AsyncClient) -> None:
            for op in share:
                await write(c, coll, op, acks)

        # A lister reads the collection in pages mid-storm, then catches up by watching.
        async def list_then_watch() -> tuple[dict, Watch]:
            await asyncio.sleep(0.01)
            items, token, first = {}, None, None
            while True:
                page = (
                    await c.get(f"/v1/{coll}", params={"limit": 2, **({"continue": token} if token else {})})
                ).json()
                first = page["revision"] if first is None else first
                items.update({i["id"]: i["data"] for i in page["items"]})
                token = page["continue"]
                if not token:
                    break
            w = Watch(first, {"transport": "ndjson", "filter": None, "cuts": []})
            await run_watch(cs[-1], coll, w, stop_at)  # on another instance than the pages, if any
            return items, w

        lister = asyncio.create_task(list_then_watch())
        await asyncio.gather(*(writer(ops[i::writers], cs[i % len(cs)]) for i in range(writers)))
        for sentinel in SENTINELS:
            await write(c, coll, sentinel, acks)
        acks.sort(key=lambda a: a.revision)
        stop_at.set_result(ends(acks, len(SENTINELS)))
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        listed, lw = await asyncio.wait_for(lister, 30)
        final = (await c.get(f"/v1/{coll}", params={"limit": 100})).json()

    # Gap-free, increasing, one revision per acknowledged change.
    assert [a.revision for a in acks] == list(range(base + 1, base + 1 + len(acks)))
    for w in ws:
        got = [(e["type"], e["revision"], e["object"]["id"], e["object"]["data"]) for e in w.got]
        assert got == expected_events(acks, w.since, w.spec["filter"]), w.spec
    # list + watch reproduces the store's final state.
    for e in lw.got:
        if e["type"] == "DELETED":
            listed.pop(e["object"]["id"], None)
        else:
            listed[e["object"]["id"]] = e["object"]["data"]
    assert listed == {i["id"]: i["data"] for i in final["items"]}
