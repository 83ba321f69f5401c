"""`POST /v1/_batch` against a real server: all or nothing, consecutive revisions, op_index."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.rest import UUID7, assert_problem, store_revision


def batch(c: httpx.Client, *ops: object) -> httpx.Response:
    return c.post("/v1/_batch", json={"ops": list(ops)})


def test_mixed_batch_commits_in_order_on_consecutive_revisions(api, coll):
    other = coll + "-o"
    api.put(f"/v1/{coll}/old", json={"v": 0})
    before = store_revision(api)
    r = batch(
        api,
        {"op": "put", "collection": coll, "id": "a", "data": {"v": 1}},
        {"op": "create", "collection": other, "data": {"made": True}},
        {"op": "patch", "collection": coll, "id": "a", "patch": {"w": 2}},
        {"op": "patch", "collection": coll, "id": "a", "patch": [{"op": "remove", "path": "/v"}]},
        {"op": "delete", "collection": coll, "id": "old"},
        {"op": "create", "collection": other, "id": "named", "data": {}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x["revision"] for x in results] == list(range(before + 1, before + 7))
    assert body["revision"] == before + 6 == store_revision(api)
    assert results[0] == {"id": "a", "revision": before + 1, "created_revision": before + 1, "data": {"v": 1}}
    assert UUID7.match(results[1]["id"])
    assert results[1]["data"] == {"made": True}
    assert results[2]["data"] == {"v": 1, "w": 2}
    assert results[3] == {"id": "a", "revision": before + 4, "created_revision": before + 1, "data": {"w": 2}}
    assert results[4]["id"] == "old" and results[4]["data"] == {"v": 0}  # the last state
    assert results[5]["id"] == "named"

    assert api.get(f"/v1/{coll}/a").json() == results[3]
    assert api.get(f"/v1/{coll}/old").status_code == 404
    assert api.get(f"/v1/{other}/{results[1]['id']}").json() == results[1]


def test_batch_created_ids_are_time_ordered(api, coll):
    r = batch(api, *({"op": "create", "collection": coll, "data": {"n": n}} for n in range(30)))
    assert r.status_code == 200
    ids = [x["id"] for x in r.json()["results"]]
    assert sorted(ids) == ids and len(set(ids)) == 30


def test_batch_if_match(api, coll):
    rev = api.put(f"/v1/{coll}/a", json={"v": 1}).json()["revision"]
    r = batch(api, {"op": "put", "collection": coll, "id": "a", "data": {"v": 2}, "if_match": rev})
    assert r.status_code == 200 and r.json()["results"][0]["created_revision"] == rev


@pytest.mark.parametrize(
    ("failing", "status", "reason"),
    [
        ({"op": "put", "id": "a", "data": {}, "if_match": 999_999}, 412, "PreconditionFailed"),
        ({"op": "patch", "id": "a", "patch": {"x": 1}, "if_match": 999_999}, 412, "PreconditionFailed"),
        ({"op": "delete", "id": "a", "if_match": 999_999}, 412, "PreconditionFailed"),
        ({"op": "patch", "id": "absent", "patch": {"x": 1}}, 404, "NotFound"),
        ({"op": "delete", "id": "absent"}, 404, "NotFound"),
        ({"op": "create", "id": "a", "data": {}}, 412, "PreconditionFailed"),
        ({"op": "patch", "id": "a", "patch": [{"op": "test", "path": "/v", "value": 2}]}, 409, "Conflict"),
        ({"op": "patch", "id": "a", "patch": [{"op": "remove", "path": "/nope"}]}, 422, "BadPatch"),
    ],
)
def test_a_refused_op_in_the_middle_writes_nothing(api, coll, failing, status, reason):
    api.put(f"/v1/{coll}/a", json={"v": 1})
    before = store_revision(api)
    r = batch(
        api,
        {"op": "put", "collection": coll, "id": "first", "data": {}},
        {"op": "patch", "collection": coll, "id": "a", "patch": {"touched": True}},
        {"collection": coll, **failing},
        {"op": "create", "collection": coll, "data": {}},
    )
    body = assert_problem(r, status, reason)
    assert body["op_index"] == 2
    assert store_revision(api) == before
    assert api.get(f"/v1/{coll}/first").status_code == 404
    assert api.get(f"/v1/{coll}/a").json()["data"] == {"v": 1}
    assert [i["id"] for i in api.get(f"/v1/{coll}").json()["items"]] == ["a"]
    # the store goes on from where it was: no revision was used up
    assert api.put(f"/v1/{coll}/next", json={}).json()["revision"] == before + 1


def test_ops_see_the_earlier_ops_of_their_batch(api, coll):
    before = store_revision(api)
    r = batch(
        api,
        {"op": "create", "collection": coll, "id": "x", "data": {"n": 1}},
        {"op": "patch", "collection": coll, "id": "x", "patch": {"n": 2}, "if_match": before + 1},
        {"op": "put", "collection": coll, "id": "x", "data": {"n": 3}, "if_match": before + 2},
        {"op": "delete", "collection": coll, "id": "x"},
        {"op": "create", "collection": coll, "id": "x", "data": {"n": 5}},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["data"]["n"] for x in results] == [1, 2, 3, 3, 5]
    assert [x["created_revision"] for x in results] == [before + 1] * 4 + [before + 5]
    assert api.get(f"/v1/{coll}/x").json() == results[-1]


def test_bad_batch_shapes(api, coll):
    before = store_revision(api)
    ok = {"op": "put", "collection": coll, "id": "ok", "data": {}}
    document: dict[str, Any]
    for document in ({}, {"ops": []}, {"ops": {}}, {"ops": "put"}, {"operations": [ok]}):
        r = api.post("/v1/_batch", json=document)
        body = assert_problem(r, 400, "BadBatch")
        assert "op_index" not in body
    for bad_op, reason in (
        (1, "BadBatch"),
        ([], "BadBatch"),
        ({"op": "upsert", "collection": coll, "id": "a", "data": {}}, "BadBatch"),
        ({"collection": coll, "id": "a", "data": {}}, "BadBatch"),
        ({"op": "put", "id": "a", "data": {}}, "BadBatch"),
        ({"op": "put", "collection": 5, "id": "a", "data": {}}, "BadBatch"),
        ({"op": "put", "collection": coll, "id": "a"}, "BadBatch"),
        ({"op": "put", "collection": coll, "id": "a", "data": [1]}, "BadBatch"),
        ({"op": "create", "collection": coll, "data": "x"}, "BadBatch"),
        ({"op": "put", "collection": coll, "id": "a", "data": {}, "if_match": "3"}, "BadBatch"),
        ({"op": "put", "collection": coll, "id": "a", "data": {}, "if_match": True}, "BadBatch"),
        ({"op": "put", "collection": coll, "id": "a", "data": {}, "if_match": 1.5}, "BadBatch"),
        ({"op": "put", "collection": coll, "data": {}}, "BadId"),
        ({"op": "put", "collection": coll, "id": "-a", "data": {}}, "BadId"),
        ({"op": "delete", "collection": coll, "id": 7}, "BadId"),
        ({"op": "put", "collection": "Bad", "id": "a", "data": {}}, "BadName"),
        ({"op": "put", "collection": "_watch", "id": "a", "data": {}}, "ReservedName"),
        ({"op": "patch", "collection": coll, "id": "a", "patch": "x"}, "BadPatch"),
        ({"op": "patch", "collection": coll, "id": "a"}, "BadPatch"),
        ({"op": "patch", "collection": coll, "id": "a", "patch": [{"op": "nope"}]}, "BadPatch"),
    ):
        body = assert_problem(batch(api, ok, ok, bad_op), 400, reason)
        assert body["op_index"] == 2, bad_op
        assert "ops[2]" in body["detail"] or reason != "BadBatch"
    too_many = [ok] * 10_001
    assert_problem(api.post("/v1/_batch", json={"ops": too_many}), 400, "BadBatch")
    assert_problem(api.post("/v1/_batch", content=b"[]"), 400, "NotAnObject")
    assert_problem(api.post("/v1/_batch", content=b'{"ops": ['), 400, "InvalidJSON")
    assert store_revision(api) == before
    assert api.get(f"/v1/{coll}/ok").status_code == 404
