"""Per-document rules against a real server: REST reads and writes, and watches (initial state,
live events and membership), including a property test over random documents and owners."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.security_keys import AUDIENCE, SECRET, hs_token
from tests.support.server import ServerFactory, ServerProcess

RULES = {"notes": "owner=$sub", "p-*": "owner in ($sub,public)", "org-*": "org=$org"}
ADMIN = hs_token(sub="admin", scope="read:* write:* watch:* bypass:*")


@pytest.fixture(scope="module")
def jwt_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(
        "rules", auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, rules=json.dumps(RULES)
    )


def as_user(jwt_server: ServerProcess, sub: str, **kw: Any) -> httpx.Client:
    token = hs_token(sub=sub, scope="read:* write:* watch:*", **kw)
    return httpx.Client(base_url=jwt_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_rest_reads_and_writes_keep_to_the_rule(jwt_server: ServerProcess) -> None:
    with as_user(jwt_server, "alice") as alice, as_user(jwt_server, "bob") as bob:
        assert alice.put("/v1/notes/a1", json={"owner": "alice", "text": "mine"}).status_code == 201
        assert bob.put("/v1/notes/b1", json={"owner": "bob", "text": "his"}).status_code == 201
        assert [r["id"] for r in alice.get("/v1/notes").json()["items"]] == ["a1"]
        assert alice.get("/v1/notes/a1").status_code == 200
        # Bob's note does not exist for alice, whatever she tries.
        hidden = alice.get("/v1/notes/b1")
        assert hidden.status_code == 404 and hidden.json()["reason"] == "NotFound"
        assert alice.patch("/v1/notes/b1", json={"text": "x"}).status_code == 404
        assert alice.delete("/v1/notes/b1").status_code == 404
        assert alice.delete("/v1/notes/b1", headers={"If-Match": '"1"'}).status_code == 404  # not 412
        assert alice.put("/v1/notes/b1", json={"owner": "alice"}).status_code == 403
        # A write that would leave the document out of her sight is refused, with nothing written.
        r = alice.patch("/v1/notes/a1", json={"owner": "bob"})
        assert r.status_code == 403 and r.json()["reason"] == "RuleViolation"
        assert alice.put("/v1/notes/a2", json={"owner": "bob"}).status_code == 403
        assert alice.post("/v1/notes", json={"text": "no owner"}).status_code == 403
        r = alice.post(
            "/v1/_batch",
            json={
                "ops": [
                    {"op": "put", "collection": "notes", "id": "a3", "data": {"owner": "alice"}},
                    {"op": "put", "collection": "notes", "id": "a4", "data": {"owner": "bob"}},
                ]
            },
        )
        assert r.status_code == 403 and r.json()["op_index"] == 1
        assert alice.get("/v1/notes/a3").status_code == 404
        assert bob.get("/v1/notes/b1").json()["data"] == {"owner": "bob", "text": "his"}
        # `_collections` lists the collection, but no count to infer hidden documents from.
        listed = {c["name"]: c for c in alice.get("/v1/_collections").json()["items"]}
        assert listed["notes"] == {"name": "notes"}


def test_claims_are_values_not_filter_text(jwt_server: ServerProcess) -> None:
    with as_user(jwt_server, "alice") as alice:
        alice.put("/v1/notes/c1", json={"owner": "alice"})
    # A subject crafted to add a clause is one quoted string: it matches no owner.
    with as_user(jwt_server, "x,owner!=nobody") as sneaky:
        assert sneaky.get("/v1/notes").json()["items"] == []
        assert sneaky.get("/v1/notes/c1").status_code == 404
    # A rule naming a claim the token lacks shows nothing; with the claim, its documents.
    with httpx.Client(base_url=jwt_server.url, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        admin.put("/v1/org-x/d1", json={"org": "acme"})
    with as_user(jwt_server, "carol") as no_org, as_user(jwt_server, "carol", org="acme") as acme:
        assert no_org.get("/v1/org-x").json()["items"] == []
        assert [r["id"] for r in acme.get("/v1/org-x").json()["items"]] == ["d1"]


async def _events(client: httpx.AsyncClient, path: str, params: dict) -> AsyncGenerator[dict, None]:
    async with aconnect_sse(client, "GET", path, params={"watch": "true", **params}) as source:
        assert source.response.status_code == 200
        async for message in source.aiter_sse():
            if message.data:
                yield json.loads(message.data)


async def test_leaving_the_rule_arrives_as_deleted_without_the_new_state(jwt_server: ServerProcess) -> None:
    token = hs_token(sub="alice", scope="watch:notes")
    admin = httpx.AsyncClient(base_url=jwt_server.url, headers={"Authorization": f"Bearer {ADMIN}"})
    watcher = httpx.AsyncClient(
        base_url=jwt_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    async with admin, watcher:
        await admin.put("/v1/notes/w1", json={"owner": "alice", "text": "draft"})
        stream = _events(watcher, "/v1/notes", {"initial": "true"})
        seen = [await anext(stream)]
        while seen[-1]["type"] != "BOOKMARK":
            seen.append(await anext(stream))
        assert any(e["type"] == "ADDED" and e["object"]["id"] == "w1" for e in seen)
        await admin.put("/v1/notes/w1", json={"owner": "bob", "text": "bob's secret"})
        await admin.put("/v1/notes/w1", json={"owner": "alice", "text": "back"})
        gone = await asyncio.wait_for(anext(stream), 5)
        back = await asyncio.wait_for(anext(stream), 5)
        await stream.aclose()
    assert gone["type"] == "DELETED"
    assert gone["object"]["data"] == {"owner": "alice", "text": "draft"}  # her last view
    assert "secret" not in json.dumps(gone)
    assert back["type"] == "ADDED" and back["object"]["data"]["text"] == "back"


# -- the property ------------------------------------------------------------------------------

USERS = ("alice", "bob")
OWNERS = st.sampled_from(["alice", "bob", "carol", "public"])
IDS = st.sampled_from(list("abcdef"))
put = st.tuples(st.just("put"), IDS, OWNERS, st.integers(0, 9))
patch = st.tuples(st.just("patch"), IDS, OWNERS, st.integers(0, 9))
delete = st.tuples(st.just("delete"), IDS, st.just(""), st.just(0))
SENTINEL = "zz-end"


def visible(sub: str, data: dict, min_n: int | None) -> bool:
    return data.get("owner") in (sub, "public") and (min_n is None or data.get("n", -1) >= min_n)


async def _scenario(url: str, docs: list, ops: list, filters: dict[str, int | None]) -> None:
    coll = f"p-{uuid.uuid4().hex[:10]}"
    path = f"/v1/{coll}"
    admin = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    async with admin:
        for id, owner, n in docs:
            await admin.put(f"{path}/{id}", json={"owner": owner, "n": n, "secret": f"{owner}-{id}"})
        watchers = {}
        views: dict[str, dict[str, dict]] = {}
        for sub in USERS:
            token = hs_token(sub=sub, scope=f"watch:{coll}")
            client = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            params = {"initial": "true", "heartbeat": 300}
            if filters[sub] is not None:
                params["filter"] = f"n>={filters[sub]}"
            stream = _events(client, path, params)
            views[sub] = {}
            while True:  # the initial state
                event = await asyncio.wait_for(anext(stream), 5)
                if event["type"] == "BOOKMARK":
                    break
                assert event["type"] == "ADDED"
                data = event["object"]["data"]
                assert visible(sub, data, filters[sub]), (sub, event)
                views[sub][event["object"]["id"]] = data
            watchers[sub] = (client, stream)
        for kind, id, owner, n in ops:
            if kind == "put":
                await admin.put(f"{path}/{id}", json={"owner": owner, "n": n, "secret": f"{owner}-{id}"})
            elif kind == "patch":
                await admin.patch(f"{path}/{id}", json={"owner": owner, "secret": f"{owner}-{id}"})
            else:
                await admin.delete(f"{path}/{id}")
        await admin.put(f"{path}/{SENTINEL}", json={"owner": "public", "n": 100})
        final = {r["id"]: r["data"] for r in (await admin.get(path)).json()["items"]}
        for sub, (client, stream) in watchers.items():
            view = views[sub]
            while True:  # live events, until the sentinel
                event = await asyncio.wait_for(anext(stream), 5)
                if event["type"] == "BOOKMARK":
                    continue
                id, data = event["object"]["id"], event["object"]["data"]
                # The property: nothing a watcher receives is hidden from it by its rule...
                assert data.get("owner") in (sub, "public"), (sub, event)
                if event["type"] == "DELETED":
                    view.pop(id, None)
                else:
                    view[id] = data
                if id == SENTINEL:
                    break
            await stream.aclose()
            await client.aclose()
            # ...and membership is right: the watcher's view is exactly what it may see now.
            expected = {i: d for i, d in final.items() if visible(sub, d, filters[sub])}
            assert view == expected, (sub, view, expected)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=st.lists(st.tuples(IDS, OWNERS, st.integers(0, 9)), max_size=6, unique_by=lambda d: d[0]),
    ops=st.lists(st.one_of(put, patch, delete), min_size=1, max_size=12),
    filters=st.fixed_dictionaries({u: st.one_of(st.none(), st.integers(0, 9)) for u in USERS}),
)
def test_no_watcher_ever_receives_what_its_rule_hides(
    jwt_server: ServerProcess, docs: list, ops: list, filters: dict
) -> None:
    asyncio.run(_scenario(jwt_server.url, docs, ops, filters))


# -- a hidden document answers writes as an absent one -------------------------------------------

MINE, THEIRS = {"owner": "alice", "text": "mine"}, {"owner": "bob", "text": "hers to hide"}
# Requests alice sends to one id: (name, method, headers, body). `{rev}` is the revision of the
# hidden document, which must make no difference; THEIRS is a state her rule would hide.
WRITES: list[tuple[str, str, dict, Any]] = [
    ("put hidden state", "PUT", {}, THEIRS),
    ("put If-Match rev", "PUT", {"If-Match": '"{rev}"'}, MINE),
    ("put If-Match other", "PUT", {"If-Match": '"1"'}, MINE),
    ("put If-Match *", "PUT", {"If-Match": "*"}, MINE),
    ("put If-Match * hidden state", "PUT", {"If-Match": "*"}, THEIRS),
    ("put If-None-Match * hidden state", "PUT", {"If-None-Match": "*"}, THEIRS),
    ("merge patch", "PATCH", {}, {"text": "x"}),
    ("merge patch {}", "PATCH", {}, {}),
    ("merge patch If-Match rev", "PATCH", {"If-Match": '"{rev}"'}, {"text": "x"}),
    (
        "json patch",
        "PATCH",
        {"Content-Type": "application/json-patch+json"},
        [{"op": "remove", "path": "/text"}],
    ),
    (
        "json patch test",
        "PATCH",
        {"Content-Type": "application/json-patch+json"},
        [{"op": "test", "path": "/owner", "value": "bob"}],
    ),
    ("delete", "DELETE", {}, None),
    ("delete If-Match rev", "DELETE", {"If-Match": '"{rev}"'}, None),
]
# Batch ops alice sends to one id, after an op of her own (so op_index is 1): (name, op).
BATCH_OPS: list[tuple[str, dict]] = [
    ("put hidden state", {"op": "put", "data": THEIRS}),
    ("put if_match rev", {"op": "put", "data": MINE, "if_match": "{rev}"}),
    ("put if_match other", {"op": "put", "data": MINE, "if_match": 1}),
    ("create hidden state", {"op": "create", "data": THEIRS}),
    ("patch", {"op": "patch", "patch": {"text": "x"}}),
    ("json patch", {"op": "patch", "patch": [{"op": "test", "path": "/owner", "value": "bob"}]}),
    ("patch if_match rev", {"op": "patch", "patch": {}, "if_match": "{rev}"}),
    ("delete", {"op": "delete"}),
    ("delete if_match rev", {"op": "delete", "if_match": "{rev}"}),
]


def _answer(r: httpx.Response, id: str) -> tuple[int, dict, Any]:
    """Everything a caller sees, with the id it asked for written `{id}`."""
    headers = {k: v.replace(id, "{id}") for k, v in r.headers.items() if k != "date"}
    body = json.loads(r.text.replace(id, "{id}")) if r.content else None
    return r.status_code, headers, body


def _hidden_and_absent(jwt_server: ServerProcess) -> tuple[str, str, int]:
    """A document of bob's, hidden from alice, and a free id of the same length; its revision."""
    suffix = uuid.uuid4().hex[:8]
    hidden, absent = f"h{suffix}", f"a{suffix}"
    with as_user(jwt_server, "bob") as bob:
        r = bob.put(f"/v1/notes/{hidden}", json={"owner": "bob", "text": "secret"})
        assert r.status_code == 201, r.text
    return hidden, absent, r.json()["revision"]


def _send(client: httpx.Client, method: str, id: str, headers: dict, body: Any, rev: int) -> httpx.Response:
    headers = {k: v.replace("{rev}", str(rev)) for k, v in headers.items()}
    content = None if body is None else json.dumps(body)
    if content is not None:
        headers.setdefault(
            "Content-Type", "application/merge-patch+json" if method == "PATCH" else "application/json"
        )
    return client.request(method, f"/v1/notes/{id}", headers=headers, content=content)


def _batch(client: httpx.Client, id: str, op: dict, rev: int) -> httpx.Response:
    op = {**op, "collection": "notes", "id": id}
    if op.get("if_match") == "{rev}":
        op["if_match"] = rev
    mine = {"op": "put", "collection": "notes", "id": f"x{id}", "data": MINE}
    return client.post("/v1/_batch", json={"ops": [mine, op]})


@pytest.mark.parametrize(("name", "method", "headers", "body"), WRITES, ids=[w[0] for w in WRITES])
def test_a_write_to_a_hidden_document_is_answered_as_for_an_absent_one(
    jwt_server: ServerProcess, name: str, method: str, headers: dict, body: Any
) -> None:
    hidden, absent, rev = _hidden_and_absent(jwt_server)
    with as_user(jwt_server, "alice") as alice:
        seen = _answer(_send(alice, method, hidden, headers, body, rev), hidden)
        expected = _answer(_send(alice, method, absent, headers, body, rev), absent)
        assert seen == expected
        assert seen[0] in (403, 404, 412), seen
    with as_user(jwt_server, "bob") as bob:  # and nothing was written
        assert bob.get(f"/v1/notes/{hidden}").json()["revision"] == rev


@pytest.mark.parametrize(("name", "op"), BATCH_OPS, ids=[b[0] for b in BATCH_OPS])
def test_a_batch_op_on_a_hidden_document_is_answered_as_on_an_absent_one(
    jwt_server: ServerProcess, name: str, op: dict
) -> None:
    hidden, absent, rev = _hidden_and_absent(jwt_server)
    with as_user(jwt_server, "alice") as alice:
        seen = _answer(_batch(alice, hidden, op, rev), hidden)
        expected = _answer(_batch(alice, absent, op, rev), absent)
        assert seen == expected
        assert seen[0] in (403, 404, 412) and seen[2]["op_index"] == 1, seen
        assert alice.get(f"/v1/notes/x{hidden}").status_code == 404  # all or nothing
    with as_user(jwt_server, "bob") as bob:
        assert bob.get(f"/v1/notes/{hidden}").json()["revision"] == rev


def test_creating_over_a_hidden_document_is_refused_as_a_creation_the_rule_forbids(
    jwt_server: ServerProcess,
) -> None:
    """The one request an absent id answers differently: a creation alice may make. Over a
    hidden document it cannot be made, and is refused exactly as creating a state her rule
    hides is: the same 403 RuleViolation, detail and all (docs/security.md, Writes)."""
    for headers in ({}, {"If-None-Match": "*"}):
        hidden, absent, rev = _hidden_and_absent(jwt_server)
        with as_user(jwt_server, "alice") as alice:
            refused = _answer(_send(alice, "PUT", hidden, headers, MINE, rev), hidden)
            forbidden = _answer(_send(alice, "PUT", absent, headers, THEIRS, rev), absent)
            assert refused == forbidden and refused[2]["reason"] == "RuleViolation"
            assert "secret" not in json.dumps(refused)
            assert _send(alice, "PUT", absent, headers, MINE, rev).status_code == 201
        for op in ({"op": "put", "data": MINE}, {"op": "create", "data": MINE}):
            hidden, absent, rev = _hidden_and_absent(jwt_server)
            with as_user(jwt_server, "alice") as alice:
                refused = _answer(_batch(alice, hidden, op, rev), hidden)
                forbidden = _answer(_batch(alice, absent, {**op, "data": THEIRS}, rev), absent)
                assert refused == forbidden and refused[2]["reason"] == "RuleViolation"
                assert _batch(alice, absent, op, rev).status_code == 200
        with as_user(jwt_server, "bob") as bob:
            assert bob.get(f"/v1/notes/{hidden}").json()["data"]["owner"] == "bob"
