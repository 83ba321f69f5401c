"""Collection schemas: `/v1/_schemas/{collection}` stores a JSON Schema and every later write to
the collection is checked against it, inside the write's transaction."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from tests.support.asyncapi import SPEC_SCHEMA, assert_described, messages_of, refs, resolve
from tests.support.openapi import operations_of
from tests.support.security_keys import AUDIENCE, SECRET, hs_token
from tests.support.ws import recv, send

STOCK = {
    "type": "object",
    "properties": {
        "symbol": {"type": "string", "pattern": "^[A-Z]{1,5}$"},
        "price": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["symbol", "price"],
}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def revision(api: httpx.Client, coll: str) -> int:
    """The store's revision, as a list of `coll` reports it."""
    return api.get(f"/v1/{coll}", params={"limit": 1}).json()["revision"]


@pytest.fixture
def stocks(api: httpx.Client, coll: str) -> Iterator[str]:
    """A collection of the test's own with the STOCK schema, removed afterwards."""
    r = api.put(f"/v1/_schemas/{coll}", json=STOCK)
    assert r.status_code == 201, r.text
    yield coll
    api.delete(f"/v1/_schemas/{coll}")


def test_put_get_and_delete_a_schema(api: httpx.Client, coll: str) -> None:
    assert api.get(f"/v1/_schemas/{coll}").status_code == 404
    r = api.put(f"/v1/_schemas/{coll}", json=STOCK)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/_schemas/{coll}"
    created = r.json()["revision"]
    got = api.get(f"/v1/_schemas/{coll}")
    assert got.status_code == 200
    assert got.json()["data"] == STOCK
    assert got.json()["revision"] == created
    assert coll in [item["id"] for item in api.get("/v1/_schemas").json()["items"]]

    looser = {**STOCK, "required": ["symbol"]}
    replaced = api.put(f"/v1/_schemas/{coll}", json=looser, headers={"If-Match": f'"{created}"'})
    assert replaced.status_code == 200, replaced.text
    assert api.get(f"/v1/_schemas/{coll}").json()["data"] == looser
    stale = api.put(f"/v1/_schemas/{coll}", json=STOCK, headers={"If-Match": f'"{created}"'})
    assert stale.status_code == 412

    deleted = api.delete(f"/v1/_schemas/{coll}")
    assert deleted.status_code == 200
    assert deleted.json()["data"] == looser
    assert api.get(f"/v1/_schemas/{coll}").status_code == 404
    # Without a schema, anything goes again.
    assert api.put(f"/v1/{coll}/x", json={"anything": True}).status_code == 201


def test_a_write_that_does_not_match_is_refused_with_pointers_and_changes_nothing(
    api: httpx.Client, stocks: str
) -> None:
    before = revision(api, stocks)
    r = api.put(f"/v1/{stocks}/AAPL", json={"symbol": "aapl", "price": -1})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["reason"] == "SchemaViolation"
    assert {e["pointer"] for e in problem["errors"]} == {"/symbol", "/price"}
    assert {e["schema_pointer"] for e in problem["errors"]} == {
        "/properties/symbol/pattern",
        "/properties/price/minimum",
    }
    assert "-1" not in r.text and "aapl" not in r.text  # where, never the value
    missing = api.post(f"/v1/{stocks}", json={"symbol": "MSFT"})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["pointer"] == ""  # the document itself lacks `price`
    assert revision(api, stocks) == before
    assert api.get(f"/v1/{stocks}/AAPL").status_code == 404

    ok = api.put(f"/v1/{stocks}/AAPL", json={"symbol": "AAPL", "price": 187.5})
    assert ok.status_code == 201
    assert ok.json()["revision"] == before + 1


def test_a_patch_whose_result_does_not_match_is_refused(api: httpx.Client, stocks: str) -> None:
    written = api.put(f"/v1/{stocks}/IBM", json={"symbol": "IBM", "price": 140}).json()
    merge = api.patch(f"/v1/{stocks}/IBM", json={"price": "cheap"}, headers=MERGE)
    assert merge.status_code == 422, merge.text
    assert merge.json()["errors"][0]["pointer"] == "/price"
    removal = api.patch(f"/v1/{stocks}/IBM", json=[{"op": "remove", "path": "/symbol"}], headers=JSON_PATCH)
    assert removal.status_code == 422, removal.text
    too_many = [{"op": "add", "path": "/tags", "value": ["a", "b", "c", "d"]}]
    refused = api.patch(f"/v1/{stocks}/IBM", json=too_many, headers=JSON_PATCH)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"] == "/tags"
    current = api.get(f"/v1/{stocks}/IBM").json()
    assert current["revision"] == written["revision"]
    assert current["data"] == {"symbol": "IBM", "price": 140}
    # A patch that leaves a matching document goes through.
    assert api.patch(f"/v1/{stocks}/IBM", json={"price": 141}, headers=MERGE).status_code == 200


def test_a_batch_with_one_bad_document_is_refused_whole(api: httpx.Client, stocks: str, coll: str) -> None:
    other = coll + "x"  # a collection without a schema, in the same batch
    before = revision(api, stocks)
    ops: list[dict[str, Any]] = [
        {"op": "put", "collection": other, "id": "free", "data": {"whatever": 1}},
        {"op": "put", "collection": stocks, "id": "A", "data": {"symbol": "A", "price": 1}},
        {"op": "create", "collection": stocks, "data": {"symbol": "B", "price": "x"}},
        {"op": "put", "collection": stocks, "id": "C", "data": {"symbol": "C", "price": 3}},
    ]
    r = api.post("/v1/_batch", json={"ops": ops})
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == "SchemaViolation"
    assert r.json()["op_index"] == 2
    assert r.json()["errors"][0]["pointer"] == "/price"
    assert revision(api, stocks) == before
    assert api.get(f"/v1/{stocks}/A").status_code == 404
    assert api.get(f"/v1/{other}/free").status_code == 404

    patched = [
        {"op": "put", "collection": stocks, "id": "A", "data": {"symbol": "A", "price": 1}},
        {"op": "patch", "collection": stocks, "id": "A", "patch": {"symbol": None}},
    ]
    r = api.post("/v1/_batch", json={"ops": patched})
    assert r.status_code == 422
    assert r.json()["op_index"] == 1
    ops[2]["data"]["price"] = 2
    assert api.post("/v1/_batch", json={"ops": ops}).status_code == 200


def test_a_schema_that_existing_documents_violate_is_refused(api: httpx.Client, coll: str) -> None:
    api.put(f"/v1/{coll}/GOOD", json={"symbol": "GOOD", "price": 1})
    api.put(f"/v1/{coll}/bad1", json={"symbol": "bad1", "price": 1})
    api.put(f"/v1/{coll}/bad2", json={"symbol": "BAD", "price": -5})
    before = revision(api, coll)
    r = api.put(f"/v1/_schemas/{coll}", json=STOCK)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["reason"] == "SchemaConflict"
    assert [o["id"] for o in problem["offenders"]] == ["bad1", "bad2"]
    assert problem["offenders"][0]["errors"][0]["pointer"] == "/symbol"
    assert problem["offenders"][1]["errors"][0]["pointer"] == "/price"
    assert revision(api, coll) == before
    assert api.get(f"/v1/_schemas/{coll}").status_code == 404
    # The refused schema holds nothing back afterwards.
    assert api.put(f"/v1/{coll}/bad3", json={"symbol": 3}).status_code == 201


def test_a_schema_that_is_not_one_is_refused(api: httpx.Client, coll: str) -> None:
    r = api.put(f"/v1/_schemas/{coll}", json={"type": "nope"})
    assert r.status_code == 422
    assert r.json()["reason"] == "BadSchema"
    assert "anyOf" in r.json()["detail"] or "nope" in r.json()["detail"]
    assert r.json()["pointer"] == "/type"
    # A reference outside the schema is not fetched: the server makes no request for a writer.
    remote = api.put(f"/v1/_schemas/{coll}", json={"$ref": "http://127.0.0.1:9/schema.json"})
    assert remote.status_code == 422
    assert "not fetched" in remote.json()["detail"]
    assert api.put(f"/v1/_schemas/{coll}", json=[1]).status_code == 400
    assert api.put("/v1/_schemas/_batch", json=STOCK).json()["reason"] == "ReservedName"
    assert api.put("/v1/_schemas/Bad", json=STOCK).json()["reason"] == "BadName"
    assert api.get(f"/v1/_schemas/{coll}").status_code == 404


def test_local_references_work_and_are_placed_in_the_documents(api: httpx.Client, coll: str) -> None:
    schema = {
        "$defs": {"money": {"type": "number", "minimum": 0}},
        "type": "object",
        "properties": {"price": {"$ref": "#/$defs/money"}},
    }
    assert api.put(f"/v1/_schemas/{coll}", json=schema).status_code == 201
    try:
        assert api.put(f"/v1/{coll}/a", json={"price": -1}).status_code == 422
        assert api.put(f"/v1/{coll}/a", json={"price": 1}).status_code == 201
        placed = api.get("/openapi.json").json()["components"]["schemas"][coll]
        assert placed["properties"]["price"]["$ref"] == f"#/components/schemas/{coll}/$defs/money"
    finally:
        api.delete(f"/v1/_schemas/{coll}")


def test_a_watch_on_schemas_sees_each_change(api: httpx.Client, coll: str) -> None:
    since = revision(api, coll)
    set_ = api.put(f"/v1/_schemas/{coll}", json=STOCK).json()
    removed = api.delete(f"/v1/_schemas/{coll}").json()
    polled = api.get(f"/v1/_schemas/{coll}", params={"watch": "longpoll", "since": since, "timeout": 5})
    assert polled.status_code == 200, polled.text
    events = [(e["type"], e["revision"]) for e in polled.json()["events"]]
    assert events == [("ADDED", set_["revision"]), ("DELETED", removed["revision"])]
    assert polled.json()["events"][0]["object"]["data"] == STOCK
    streamed: dict[str, str | int | float] = {"watch": "true", "since": since, "timeout": 0.5}
    with api.stream("GET", "/v1/_schemas", params=streamed) as stream:
        lines = [line for line in stream.iter_lines() if line]
    assert f'"id":"{coll}"' in lines[0]


def test_a_websocket_watches_schemas_too(api: httpx.Client, coll: str) -> None:
    url = str(api.base_url).replace("http://", "ws://")

    async def subscribe_then_set() -> list[dict[str, Any]]:
        async with connect(url + "/v1/_watch") as ws:
            await send(ws, {"op": "subscribe", "sub": "s", "collection": "_schemas", "id": coll})
            assert (await recv(ws))["type"] == "SUBSCRIBED"
            set_ = await asyncio.to_thread(api.put, f"/v1/_schemas/{coll}", json=STOCK)
            assert set_.status_code == 201
            return [await recv(ws)]

    [event] = asyncio.run(subscribe_then_set())
    api.delete(f"/v1/_schemas/{coll}")
    assert event["type"] == "ADDED" and event["sub"] == "s"
    assert event["object"]["id"] == coll and event["object"]["data"] == STOCK


def test_openapi_and_asyncapi_show_each_collections_schema(api: httpx.Client, stocks: str) -> None:
    openapi = api.get("/openapi.json").json()
    components = openapi["components"]["schemas"]
    assert components[stocks] == STOCK
    data = components[f"{stocks}.resource"]["properties"]["data"]
    assert data == {"$ref": f"#/components/schemas/{stocks}"}
    item = openapi["paths"][f"/v1/{stocks}/{{id}}"]
    ok = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    # The resource, or with watch=longpoll the events ready.
    assert ok == [
        {"$ref": f"#/components/schemas/{stocks}.resource"},
        {"$ref": "#/components/schemas/LongPollAnswer"},
    ]
    body = item["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": f"#/components/schemas/{stocks}"}
    assert "/v1/{collection}" in openapi["paths"]  # the generic routes stay

    asyncapi = api.get("/asyncapi.json").json()
    change = asyncapi["components"]["schemas"][f"{stocks}.change"]
    assert change["properties"]["object"] == {"$ref": f"#/components/schemas/{stocks}.resource"}
    assert asyncapi["channels"][f"collection.{stocks}"]["address"] == f"/v1/{stocks}"

    # Both documents stay whole: every reference resolves, AsyncAPI's own schema holds, and
    # what a watch of the collection sends is what its channel describes.
    for document in (openapi, asyncapi):
        for ref in refs(document):
            assert resolve(document, ref) is not None, ref
    spec = jsonschema_rs.validator_for(json.loads(SPEC_SCHEMA.read_text()))
    assert [e.message for e in spec.iter_errors(asyncapi)] == []
    operations = operations_of(schemathesis.openapi.from_dict(openapi))
    assert f"/v1/{stocks}/{{id}}" in {operation.path for operation in operations}
    since = revision(api, stocks)
    api.put(f"/v1/{stocks}/AAPL", json={"symbol": "AAPL", "price": 1})
    api.delete(f"/v1/{stocks}/AAPL")
    polled = api.get(f"/v1/{stocks}", params={"watch": "longpoll", "since": since}).json()["events"]
    assert [e["type"] for e in polled] == ["ADDED", "DELETED"]
    described = messages_of(asyncapi, f"watch.{stocks}")
    for event in polled:
        assert_described(described, event)

    api.delete(f"/v1/_schemas/{stocks}")
    assert stocks not in api.get("/openapi.json").json()["components"]["schemas"]
    assert f"{stocks}.change" not in api.get("/asyncapi.json").json()["components"]["schemas"]


def replay(api: httpx.Client, coll: str, since: int, upto: int) -> list[tuple[int, str, str]]:
    """The changes of `coll` in (since, upto]: (revision, type, id)."""
    changes = []
    while since < upto:
        params: dict[str, str | int | float] = {"watch": "longpoll", "since": since, "timeout": 5}
        page = api.get(f"/v1/{coll}", params=params).json()
        changes += [(e["revision"], e["type"], e["object"]["id"]) for e in page["events"]]
        since = page["revision"]
    return changes


def test_no_document_that_violates_a_schema_set_meanwhile_is_left(api: httpx.Client, coll: str) -> None:
    """Writers race a schema being set; replaying the log, no document that violates the schema
    is alive when it takes force, and none is written after."""
    start = revision(api, coll)
    stop, writing = threading.Event(), threading.Event()
    errors: list[str] = []

    def write(worker: int) -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=10) as c:
            n = 0
            while not stop.is_set():
                # Lowercase symbols match no schema of this test: each is deleted soon after.
                id = f"w{worker}-{n}"
                r = c.put(f"/v1/{coll}/{id}", json={"symbol": "low", "price": 1})
                if r.status_code == 201:
                    writing.set()
                    c.delete(f"/v1/{coll}/{id}")
                elif r.status_code != 422:
                    errors.append(r.text)
                n += 1

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        assert writing.wait(10)
        for _ in range(40):
            r = api.put(f"/v1/_schemas/{coll}", json={"properties": {"symbol": {"pattern": "^[A-Z]+$"}}})
            assert r.status_code in (201, 409), r.text
            if r.status_code == 201:
                in_force = r.json()["revision"]
                break
        else:
            pytest.fail("the schema never took force")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    alive: set[str] = set()
    changes = replay(api, coll, start, revision(api, coll))
    for rev, type, id in changes:
        if rev > in_force:
            assert type == "DELETED", f"{id} written at {rev}, after the schema took force at {in_force}"
        elif type == "DELETED":
            alive.discard(id)
        else:
            alive.add(id)
    assert not alive, f"{alive} were alive, violating it, when the schema took force at {in_force}"
    assert any(rev < in_force for rev, *_ in changes)  # the writers did race the schema
    api.delete(f"/v1/_schemas/{coll}")


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["", "A", "AB", "abc", "ABCDEF"]),
)
DOCUMENTS = st.dictionaries(
    st.sampled_from(["symbol", "price", "tags", "extra"]),
    st.one_of(SCALARS, st.lists(SCALARS, max_size=4)),
    max_size=4,
)


@pytest.fixture(scope="module")
def property_collection(api: httpx.Client) -> Iterator[str]:
    coll = "p" + uuid.uuid4().hex[:12]
    assert api.put(f"/v1/_schemas/{coll}", json=STOCK).status_code == 201
    yield coll
    api.delete(f"/v1/_schemas/{coll}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=DOCUMENTS, patch=DOCUMENTS)
def test_the_server_refuses_exactly_what_the_validator_refuses(
    api: httpx.Client, property_collection: str, document: dict[str, Any], patch: dict[str, Any]
) -> None:
    validator = jsonschema_rs.validator_for(STOCK)
    coll, id = property_collection, "p" + uuid.uuid4().hex[:8]
    before = revision(api, coll)
    r = api.put(f"/v1/{coll}/{id}", json=document)
    if validator.is_valid(document):
        assert r.status_code == 201, r.text
    else:
        assert r.status_code == 422, r.text
        assert r.json()["reason"] == "SchemaViolation"
        assert revision(api, coll) == before
        assert api.get(f"/v1/{coll}/{id}").status_code == 404
        return
    # A merge patch: the result is what is checked.
    merged = {k: v for k, v in {**document, **patch}.items() if v is not None}
    written = r.json()["revision"]
    p = api.patch(f"/v1/{coll}/{id}", json=patch, headers=MERGE)
    if validator.is_valid(merged):
        assert p.status_code == 200, p.text
        assert p.json()["data"] == merged
    else:
        assert p.status_code == 422, p.text
        assert revision(api, coll) == written
        assert api.get(f"/v1/{coll}/{id}").json()["data"] == document


# -- limits and grants, on servers of their own ----------------------------------------------


def test_a_collection_too_large_to_check_is_refused(make_server: Any) -> None:
    server = make_server(schema_check_max_documents=3)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for i in range(4):
            c.put(f"/v1/big/d{i}", json={"symbol": "OK", "price": 1})
        r = c.put("/v1/_schemas/big", json=STOCK)
        assert r.status_code == 409
        assert r.json()["reason"] == "TooManyToCheck"
        assert c.get("/v1/_schemas/big").status_code == 404
        c.delete("/v1/big/d3")
        assert c.put("/v1/_schemas/big", json=STOCK).status_code == 201


def test_the_schema_grant_is_a_grant_of_its_own() -> None:
    from watchroute.security.grants import allows, is_grant

    assert is_grant("schema:stocks") and is_grant("schema:*")  # an API key may carry it
    assert not allows(frozenset({"write:*", "read:*"}), "schema", "stocks")
    assert allows(frozenset({"schema:st*"}), "schema", "stocks")


def test_setting_a_schema_takes_the_schema_grant(make_server: Any) -> None:
    server = make_server(auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE)

    def as_scope(scope: str) -> httpx.Client:
        token = hs_token(sub="someone", scope=scope)
        return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    with as_scope("read:* write:* watch:*") as writer, as_scope("schema:stocks read:_schemas") as admin:
        refused = writer.put("/v1/_schemas/stocks", json=STOCK)
        assert refused.status_code == 403
        assert "schema:stocks" in refused.json()["detail"]
        assert admin.put("/v1/_schemas/bonds", json=STOCK).status_code == 403
        assert admin.put("/v1/_schemas/stocks", json=STOCK).status_code == 201
        assert writer.get("/v1/_schemas/stocks").json()["data"] == STOCK  # read:* reads _schemas
        assert writer.put("/v1/stocks/X", json={"symbol": "x"}).status_code == 422
        assert writer.delete("/v1/_schemas/stocks").status_code == 403
        assert admin.delete("/v1/_schemas/stocks").status_code == 200


def test_schemas_outlive_a_restart(make_server: Any) -> None:
    server = make_server()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.put("/v1/_schemas/stocks", json=STOCK).status_code == 201
    server.restart()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/v1/_schemas/stocks").json()["data"] == STOCK
        assert c.put("/v1/stocks/X", json={"symbol": "X"}).status_code == 422
        assert c.put("/v1/stocks/X", json={"symbol": "X", "price": 1}).status_code == 201


def test_every_worker_follows_the_schemas_set_by_another(make_server: Any) -> None:
    server = make_server(workers=2)

    def answered_everywhere(*expected: int) -> bool:
        """20 writes, each on a connection of its own (the kernel spreads them over the workers)."""
        for i in range(20):
            with httpx.Client(base_url=server.url, timeout=10) as c:
                if c.put(f"/v1/stocks/w{i}", json={"symbol": "lower"}).status_code not in expected:
                    return False
        return True

    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.put("/v1/_schemas/stocks", json=STOCK).status_code == 201
    deadline = time.monotonic() + 5
    while not answered_everywhere(422):
        assert time.monotonic() < deadline, "a worker still takes what the schema refuses"
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.delete("/v1/_schemas/stocks").status_code == 200
    deadline = time.monotonic() + 5
    while not answered_everywhere(200, 201):
        assert time.monotonic() < deadline, "a worker still holds a removed schema"


def test_a_reload_forgets_the_schemas_removed_meanwhile() -> None:
    """After its cursor fell behind the history horizon a process reads every schema again: one
    removed in between must not stay in force there."""
    from watchroute.core.change import ADDED, Change
    from watchroute.schemas import SCHEMAS, SchemaBook
    from watchroute.store.base import Page, Row, WriteOp

    class Store:
        def __init__(self, rows: list[Row], revision: int) -> None:
            self.rows, self.revision = rows, revision

        async def list(self, collection: str, flt: Any, limit: int, after: str | None) -> Page:
            assert collection == SCHEMAS
            return Page(self.rows, self.revision, None)

    book = SchemaBook()
    for revision, name in ((3, "gone"), (4, "kept")):
        book.saw(Change(revision, ADDED, SCHEMAS, name, revision, json.dumps(STOCK).encode(), None, 0.0))
    kept = Row(SCHEMAS, "kept", 4, 4, json.dumps(STOCK).encode())
    assert asyncio.run(book._load(Store([kept], 9))) == 9
    assert set(book.documents()) == {"kept"}
    book.check(WriteOp("put", "gone", "x"), {"symbol": 1})  # no schema: anything goes
    with pytest.raises(Exception, match="does not match the schema of kept"):
        book.check(WriteOp("put", "kept", "x"), {"symbol": 1})
