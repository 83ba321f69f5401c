"""Writes under concurrency, against a real server: requests that the store commits together
still each commit whole or not at all, see one another's writes, and take gap-free revisions;
single-resource writes (answered in front of the framework's routing) answer exactly as the
routes document."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from tests.support.rest import MERGE, assert_problem, store_revision
from watchroute.security.identity import Identity


async def test_concurrent_writes_commit_alone_or_together_on_gap_free_revisions(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        assert (await c.put("/v1/g/taken", json={"n": 0})).status_code == 201
        before = (await c.get("/v1/g")).json()["revision"]

        def requests(i: int):
            if i % 4 == 1:  # refused inside the store, amid writes that commit
                return c.put("/v1/g/taken", json={"n": i}, headers={"If-None-Match": "*"})
            if i % 4 == 2:
                return c.put(f"/v1/g/absent-{i}", json={"n": i}, headers={"If-Match": '"1"'})
            return c.put(f"/v1/g/r{i}", json={"n": i})

        answers = await asyncio.gather(*(requests(i) for i in range(200)))

        revisions = []
        for i, r in enumerate(answers):
            if i % 4 in (1, 2):
                assert_problem(r, 412, "PreconditionFailed")
            else:
                assert r.status_code == 201, r.text
                body = r.json()
                assert body["data"] == {"n": i} and body["created_revision"] == body["revision"]
                assert r.headers["etag"] == f'"{body["revision"]}"'
                assert r.headers["location"] == f"/v1/g/r{i}"
                revisions.append(body["revision"])
        # Every commit took the next revision; the refused writes took none.
        assert sorted(revisions) == list(range(before + 1, before + 101))
        assert (await c.get("/v1/g")).json()["revision"] == before + 100
        assert (await c.get("/v1/g/taken")).json()["data"] == {"n": 0}
        assert (await c.get("/v1/g/absent-2")).status_code == 404
        for i in (0, 3, 199):
            r = await c.get(f"/v1/g/r{i}")
            assert r.json()["data"] == {"n": i}


async def test_concurrent_writes_to_one_resource_each_see_the_one_before(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        created = (await c.put("/v1/g/doc", json={"start": True})).json()
        patches = await asyncio.gather(
            *(c.patch("/v1/g/doc", json={f"k{i}": i}, headers=MERGE) for i in range(60))
        )
        assert all(r.status_code == 200 for r in patches), [r.text for r in patches if r.status_code != 200]
        final = (await c.get("/v1/g/doc")).json()
        # No patch was applied to a stale state: every key is there.
        assert final["data"] == {"start": True, **{f"k{i}": i for i in range(60)}}
        assert final["created_revision"] == created["revision"]
        assert final["revision"] == max(r.json()["revision"] for r in patches)

        # Deletes and puts of one resource, concurrently: each answer is a state the next one saw.
        answers = await asyncio.gather(
            *(c.delete("/v1/g/doc") if i % 2 else c.put("/v1/g/doc", json={"i": i}) for i in range(40))
        )
        ordered = sorted(
            (r for r in answers if r.status_code in (200, 201)), key=lambda r: r.json()["revision"]
        )
        existing = True
        for r in ordered:
            method = r.request.method
            assert r.status_code == (201 if method == "PUT" and not existing else 200), (method, existing)
            existing = method == "PUT"
        for r in answers:
            if r.status_code == 404:
                assert r.request.method == "DELETE"


async def test_a_batch_and_single_writes_committed_together(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        batch = {
            "ops": [
                {"op": "put", "collection": "g", "id": "b1", "data": {"v": 1}},
                {"op": "patch", "collection": "g", "id": "b1", "patch": {"w": 2}},
                {"op": "delete", "collection": "g", "id": "b1"},
                {"op": "put", "collection": "g", "id": "b1", "data": {"again": True}},
            ]
        }
        refused = {"ops": [*batch["ops"], {"op": "patch", "collection": "g", "id": "nope", "patch": {}}]}
        answers = await asyncio.gather(
            c.post("/v1/_batch", json=batch),
            c.post("/v1/_batch", json=refused),
            *(c.put(f"/v1/g/s{i}", json={"i": i}) for i in range(20)),
        )
        ok, bad, *singles = answers
        assert ok.status_code == 200, ok.text
        results = ok.json()["results"]
        assert [r["revision"] for r in results] == list(
            range(results[0]["revision"], results[0]["revision"] + 4)
        )
        assert results[3]["data"] == {"again": True}
        assert results[3]["created_revision"] == results[3]["revision"]  # created anew after the delete
        assert assert_problem(bad, 404, "NotFound")["op_index"] == 4
        assert all(r.status_code == 201 for r in singles)
        revisions = sorted([r["revision"] for r in results] + [r.json()["revision"] for r in singles])
        assert revisions == list(range(revisions[0], revisions[0] + 24))
        assert (await c.get("/v1/g/b1")).json()["data"] == {"again": True}


def test_single_writes_answer_as_documented(api, coll):
    before = store_revision(api)
    r = api.post(f"/v1/{coll}", json={"a": 1})
    assert r.status_code == 201
    body = r.json()
    assert r.headers["location"] == f"/v1/{coll}/{body['id']}"
    assert r.headers["content-type"] == "application/json"
    assert r.headers["etag"] == f'"{before + 1}"'
    assert int(r.headers["content-length"]) == len(r.content)

    r = api.put(f"/v1/{coll}/x", content=b'{ "b" : [1, 2.5, "\\u00e9"] }', headers={"If-None-Match": "*"})
    assert r.status_code == 201
    assert r.content == b'{"id":"x","revision":%d,"created_revision":%d,"data":{"b":[1,2.5,"\xc3\xa9"]}}' % (
        before + 2,
        before + 2,
    )
    assert_problem(
        api.put(f"/v1/{coll}/x", json={}, headers={"If-None-Match": "*"}), 412, "PreconditionFailed"
    )
    assert_problem(api.put(f"/v1/{coll}/x", json={}, headers={"If-Match": "nope"}), 400, "BadParameter")
    assert_problem(api.put(f"/v1/{coll}/x", content=b"[1]"), 400, "NotAnObject")
    assert_problem(api.put(f"/v1/{coll}/x", content=b"{"), 400, "InvalidJSON")
    assert_problem(api.put(f"/v1/{coll}/bad id", json={}), 400, "BadId")
    assert_problem(api.put("/v1/Bad/x", json={}), 400, "BadName")
    # Reserved names, other shapes and other methods are the routes' to answer, as before.
    assert_problem(api.put("/v1/_batch/x", json={}), 400, "ReservedName")
    assert_problem(api.post(f"/v1/{coll}/x", json={}), 405, "MethodNotAllowed")
    assert_problem(api.put(f"/v1/{coll}", json={}), 405, "MethodNotAllowed")
    for path in ("/v1", "/v1/", f"/v1/{coll}/x/", f"/v1/{coll}//x", "/v2/a/b"):
        assert api.put(path, json={}).status_code in (404, 405, 307), path
        assert api.post(path, json={}).status_code in (404, 405, 307), path
    assert (
        api.post("/v1/_batch", json={"ops": [{"op": "delete", "collection": coll, "id": "x"}]}).status_code
        == 200
    )
    r = api.delete(f"/v1/{coll}/x", headers={"If-Match": f'"{before + 2}"'})
    assert_problem(r, 404, "NotFound")
    assert store_revision(api) == before + 3


def test_an_identity_at_an_address_keeps_everything_else():
    identity = Identity(
        "alice", frozenset({"write:*"}), {"sub": "alice"}, 123.0, "jwt", True, "10.0.0.1", "cookie"
    )
    assert identity.at("10.0.0.2", "header") == replace(identity, address="10.0.0.2", source="header")
    assert identity.at("10.0.0.2", "header").claims == {"sub": "alice"}
