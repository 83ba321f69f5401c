"""Grants against a real server: a credential that may write a collection but not read it gets
no document back from any write, and no error quotes a stored value to anyone."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.security_keys import AUDIENCE, SECRET, create_apikey, hs_token
from tests.support.server import ServerFactory, ServerProcess
from watchroute.client import Client

PIN = "pin-4921-kept-secret"
STORED = {"pin": PIN, "nested": {"deep": PIN}, "n": 1}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
WRITTEN_KEYS = {"id", "revision", "created_revision"}


@pytest.fixture(scope="module")
def jwt_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers("grants", auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE)


def as_scope(jwt_server: ServerProcess, scope: str) -> httpx.Client:
    token = hs_token(sub="writer", scope=scope)
    return httpx.Client(base_url=jwt_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.fixture
def stored(jwt_server: ServerProcess) -> Iterator[tuple[str, httpx.Client]]:
    """A collection of the test's own, holding s1 and s2 with the secret, and an owner who reads."""
    coll = "s" + uuid.uuid4().hex[:10]
    with as_scope(jwt_server, "read:* write:*") as owner:
        for id in ("s1", "s2"):
            assert owner.put(f"/v1/{coll}/{id}", json=STORED).status_code == 201
        yield coll, owner


def assert_blind(r: httpx.Response, status: int) -> dict:
    """A write's answer with the id and revisions only, and nothing of the stored document."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == WRITTEN_KEYS, body
    assert r.headers["etag"] == f'"{body["revision"]}"'
    assert PIN not in r.text
    return body


def test_a_write_only_credential_gets_no_document_back(
    jwt_server: ServerProcess, stored: tuple[str, httpx.Client]
) -> None:
    coll, owner = stored
    with as_scope(jwt_server, f"write:{coll}") as writer:
        assert writer.get(f"/v1/{coll}/s1").status_code == 403  # it may not read...
        # ...and no write reads for it: not a merge patch that changes nothing (the attack)...
        assert_blind(writer.patch(f"/v1/{coll}/s1", json={}), 200)
        assert_blind(writer.patch(f"/v1/{coll}/s1", json={"n": 2}), 200)
        added = [{"op": "add", "path": "/n", "value": 3}]
        assert_blind(writer.patch(f"/v1/{coll}/s1", content=json.dumps(added), headers=JSON_PATCH), 200)
        # ...nor a DELETE, which others get the last state from...
        gone = assert_blind(writer.delete(f"/v1/{coll}/s2"), 200)
        # ...nor the writes of its own data, so that every write answers in one shape.
        made = assert_blind(writer.put(f"/v1/{coll}/s3", json={"mine": 1}), 201)
        assert_blind(writer.put(f"/v1/{coll}/s3", json={"mine": 2}), 200)
        created = assert_blind(writer.post(f"/v1/{coll}", json={"mine": 3}), 201)
        stale = writer.put(f"/v1/{coll}/s1", json={}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412 and PIN not in stale.text
    # The writes were made: the owner reads their results.
    assert owner.get(f"/v1/{coll}/s1").json()["data"] == {**STORED, "n": 3}
    assert owner.get(f"/v1/{coll}/s2").status_code == 404 and gone["id"] == "s2"
    assert owner.get(f"/v1/{coll}/s3").json()["revision"] == made["revision"] + 1
    assert owner.get(f"/v1/{coll}/{created['id']}").json()["data"] == {"mine": 3}


def test_no_batch_op_gives_a_write_only_credential_the_document(
    jwt_server: ServerProcess, stored: tuple[str, httpx.Client]
) -> None:
    coll, owner = stored
    ops: list[dict[str, Any]] = [
        {"op": "patch", "id": "s1", "patch": {}},
        {"op": "patch", "id": "s1", "patch": [{"op": "add", "path": "/n", "value": 5}]},
        {"op": "delete", "id": "s2"},
        {"op": "put", "id": "s3", "data": {"mine": 1}},
        {"op": "create", "data": {"mine": 2}},
    ]
    with as_scope(jwt_server, f"write:{coll} read:other") as writer:
        r = writer.post("/v1/_batch", json={"ops": [{**op, "collection": coll} for op in ops]})
    assert r.status_code == 200, r.text
    assert PIN not in r.text
    results = r.json()["results"]
    assert [set(result) for result in results] == [WRITTEN_KEYS] * len(ops)
    assert [result["revision"] for result in results] == list(
        range(r.json()["revision"] - 4, r.json()["revision"] + 1)
    )
    assert owner.get(f"/v1/{coll}/s1").json()["data"]["n"] == 5


def test_a_batch_shows_the_documents_of_the_collections_the_caller_may_read(
    jwt_server: ServerProcess, stored: tuple[str, httpx.Client]
) -> None:
    coll, _ = stored
    other = coll + "-r"
    with as_scope(jwt_server, f"write:{coll} read:{other} write:{other}") as writer:
        r = writer.post(
            "/v1/_batch",
            json={
                "ops": [
                    {"op": "put", "collection": other, "id": "r1", "data": {"shown": True}},
                    {"op": "patch", "collection": coll, "id": "s1", "patch": {}},
                ]
            },
        )
    assert r.status_code == 200, r.text
    readable, blind = r.json()["results"]
    assert readable["data"] == {"shown": True}
    assert set(blind) == WRITTEN_KEYS and PIN not in r.text


def test_a_json_patch_test_op_is_a_read(jwt_server: ServerProcess, stored: tuple[str, httpx.Client]) -> None:
    """A `test` op succeeds or fails by the stored value: answered, it would let a credential
    that may not read guess the value one write at a time. It takes the read grant."""
    coll, owner = stored
    revision = owner.get(f"/v1/{coll}/s1").json()["revision"]
    guess = [{"op": "test", "path": "/pin", "value": PIN}, {"op": "add", "path": "/n", "value": 9}]
    with as_scope(jwt_server, f"write:{coll}") as writer:
        r = writer.patch(f"/v1/{coll}/s1", content=json.dumps(guess), headers=JSON_PATCH)
        assert r.status_code == 403 and r.json()["reason"] == "Forbidden", r.text
        assert f"read:{coll}" in r.json()["detail"] and PIN not in r.text
        op = {"op": "patch", "collection": coll, "id": "s1", "patch": guess}
        r = writer.post("/v1/_batch", json={"ops": [{"op": "delete", "collection": coll, "id": "s2"}, op]})
        assert r.status_code == 403 and r.json()["op_index"] == 1 and PIN not in r.text
    assert owner.get(f"/v1/{coll}/s1").json()["revision"] == revision  # nothing written
    assert owner.get(f"/v1/{coll}/s2").status_code == 200


@pytest.mark.parametrize(
    ("patch", "status", "reason"),
    [
        ([{"op": "test", "path": "/pin", "value": "guess"}], 409, "Conflict"),
        ([{"op": "test", "path": "/nested/missing", "value": 1}], 409, "Conflict"),
        ([{"op": "replace", "path": "/nested/missing/x", "value": 1}], 422, "BadPatch"),
        ([{"op": "remove", "path": "/nested/missing"}], 422, "BadPatch"),
        ([{"op": "add", "path": "/pin/x", "value": 1}], 422, "BadPatch"),
        ([{"op": "copy", "from": "/nested/missing", "path": "/x"}], 422, "BadPatch"),
    ],
)
def test_a_failing_json_patch_never_quotes_the_stored_document(
    jwt_server: ServerProcess, stored: tuple[str, httpx.Client], patch: list, status: int, reason: str
) -> None:
    coll, owner = stored
    r = owner.patch(f"/v1/{coll}/s1", content=json.dumps(patch), headers=JSON_PATCH)
    assert r.status_code == status and r.json()["reason"] == reason, r.text
    assert PIN not in r.text and "deep" not in r.text, r.text
    r = owner.post(
        "/v1/_batch", json={"ops": [{"op": "patch", "collection": coll, "id": "s1", "patch": patch}]}
    )
    assert r.status_code == status and PIN not in r.text and "deep" not in r.text, r.text


def test_a_caller_who_may_read_gets_the_document_as_before(
    jwt_server: ServerProcess, stored: tuple[str, httpx.Client]
) -> None:
    coll, owner = stored
    r = owner.patch(f"/v1/{coll}/s1", json={"n": 2})
    assert r.status_code == 200 and r.json()["data"] == {**STORED, "n": 2}
    r = owner.delete(f"/v1/{coll}/s2")
    assert r.status_code == 200 and r.json()["data"] == STORED
    tested = [{"op": "test", "path": "/pin", "value": PIN}, {"op": "remove", "path": "/nested"}]
    r = owner.patch(f"/v1/{coll}/s1", content=json.dumps(tested), headers=JSON_PATCH)
    assert r.status_code == 200 and r.json()["data"] == {"pin": PIN, "n": 2}
    r = owner.post(
        "/v1/_batch", json={"ops": [{"op": "put", "collection": coll, "id": "s2", "data": STORED}]}
    )
    assert r.status_code == 200 and r.json()["results"][0]["data"] == STORED


def test_a_write_only_api_key_through_the_client(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, auth="apikey").start()
    try:
        _, owner_key = create_apikey(proc.database, "read:vault", "write:vault")
        _, writer_key = create_apikey(proc.database, "write:vault")
        with Client(proc.url, headers={"X-API-Key": owner_key}) as owner:
            owner.put("vault", "v1", STORED)
            owner.put("vault", "v2", STORED)
        with Client(proc.url, headers={"X-API-Key": writer_key}) as writer:
            patched = writer.patch("vault", "v1", {})
            deleted = writer.delete("vault", "v2")
            result = writer.batch([{"op": "patch", "collection": "vault", "id": "v1", "patch": {"n": 7}}])
        assert patched.id == "v1" and patched.data is None
        assert deleted.id == "v2" and deleted.data is None
        assert result.results[0].data is None and result.results[0].revision == result.revision
    finally:
        proc.stop()
