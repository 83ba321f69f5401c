"""What a write may make of a document: no larger than `max_document_bytes`, however small the
patch that asks for more, and with nobody else's write held up meanwhile."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import jsonpatch
import orjson
import pytest
from jsonpointer import JsonPointerException
from typer.testing import CliRunner

from tests.support.rest import JSON_PATCH, MERGE, assert_problem, store_revision
from tests.support.server import ServerProcess
from watchroute.cli import app
from watchroute.core.problems import Problem
from watchroute.store.base import Row
from watchroute.wire.patches import json_patch

CAP = 2000
BATCH_CAP = 5000


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server whose documents may hold CAP bytes and a batch's BATCH_CAP, under the default
    1 MiB body limit."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("capped"), max_document_bytes=CAP, max_batch_bytes=BATCH_CAP
    ).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as c:
            yield c
    finally:
        proc.stop()


def doubling(times: int) -> list[dict]:
    """Each op copies /b into a new member of /b: the document doubles with every op."""
    return [{"op": "copy", "from": "/b", "path": f"/b/c{i}"} for i in range(times)]


def sized(size: int) -> bytes:
    """A document whose JSON is exactly `size` bytes."""
    body = orjson.dumps({"a": "x" * (size - 8)})
    assert len(body) == size
    return body


def test_a_small_doubling_patch_is_refused_at_once_and_other_writes_go_on(capped, coll):
    original = {"b": {"x": "y" * 100}}
    first = capped.put(f"/v1/{coll}/d", json=original).json()
    patch = json.dumps(doubling(20)).encode()
    assert len(patch) < 1024  # unbounded, this made a document of about 100 MB
    answers: list[httpx.Response] = []
    took: list[float] = []

    def attack() -> None:
        with httpx.Client(base_url=capped.base_url, timeout=5) as c:
            started = time.monotonic()
            answers.append(c.patch(f"/v1/{coll}/d", content=patch, headers=JSON_PATCH))
            took.append(time.monotonic() - started)

    attacker = threading.Thread(target=attack)
    attacker.start()
    slowest = 0.0
    for i in range(20):  # an ordinary writer meanwhile
        started = time.monotonic()
        assert capped.put(f"/v1/{coll}/w{i}", json={"i": i}).status_code == 201
        slowest = max(slowest, time.monotonic() - started)
    attacker.join()
    body = assert_problem(answers[0], 413, "DocumentTooLarge")
    assert str(CAP) in body["detail"] and "max_document_bytes" in body["detail"]
    assert took[0] < 2.0, took
    assert slowest < 2.0, slowest
    after = capped.get(f"/v1/{coll}/d").json()
    assert after["data"] == original and after["revision"] == first["revision"]


def test_the_default_limit_is_the_body_limit(api, coll):
    api.put(f"/v1/{coll}/d", json={"a": "x" * 600_000})
    before = store_revision(api)
    r = api.patch(f"/v1/{coll}/d", json={"b": "y" * 600_000}, headers=MERGE)
    body = assert_problem(r, 413, "DocumentTooLarge")
    assert str(1 << 20) in body["detail"]
    # thirty doublings (unbounded: gigabytes) are refused in milliseconds
    api.put(f"/v1/{coll}/e", json={"b": {"x": "y" * 100}})
    before = store_revision(api)
    started = time.monotonic()
    r = api.patch(f"/v1/{coll}/e", json=doubling(30), headers=JSON_PATCH)
    took = time.monotonic() - started
    assert_problem(r, 413, "DocumentTooLarge")
    assert took < 1.0, took
    assert store_revision(api) == before


def test_copying_a_large_value_over_itself_again_and_again_is_bounded(capped, coll):
    # The document never grows, but each copy clones 900 bytes: the copies together are capped.
    capped.put(f"/v1/{coll}/d", json={"a": "x" * 900, "b": "y" * 900})
    before = store_revision(capped)
    ops = [{"op": "copy", "from": "/a", "path": "/b"}, {"op": "copy", "from": "/b", "path": "/a"}] * 2
    assert_problem(capped.patch(f"/v1/{coll}/d", json=ops, headers=JSON_PATCH), 422, "PatchTooCostly")
    assert store_revision(capped) == before
    # within the bound, the same copies are served
    r = capped.patch(f"/v1/{coll}/d", json=ops[:2], headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"a": "x" * 900, "b": "x" * 900}


def test_a_merge_patch_past_the_limit_is_refused_and_one_just_under_is_served(capped, coll):
    capped.put(f"/v1/{coll}/d", content=sized(CAP - 100))
    before = store_revision(capped)
    # {"a": ..., "b": "zz..."} adds 7 bytes of punctuation and name, and the string
    body = assert_problem(
        capped.patch(f"/v1/{coll}/d", json={"b": "z" * 94}, headers=MERGE), 413, "DocumentTooLarge"
    )
    assert f"{CAP + 1} bytes" in body["detail"]
    assert store_revision(capped) == before
    r = capped.patch(f"/v1/{coll}/d", json={"b": "z" * 93}, headers=MERGE)
    assert r.status_code == 200, r.text
    assert len(orjson.dumps(r.json()["data"])) == CAP


def test_a_json_patch_may_pass_through_removals_and_end_under_the_limit(capped, coll):
    capped.put(f"/v1/{coll}/d", json={"a": "x" * 1500})
    ops = [
        {"op": "remove", "path": "/a"},
        {"op": "add", "path": "/b", "value": "y" * 1500},
        {"op": "copy", "from": "/b", "path": "/c"},
    ]
    # the copy would take it past the limit; without it, the patch is served
    assert_problem(capped.patch(f"/v1/{coll}/d", json=ops, headers=JSON_PATCH), 413, "DocumentTooLarge")
    r = capped.patch(f"/v1/{coll}/d", json=ops[:2], headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"b": "y" * 1500}


def test_every_write_is_held_to_the_limit(capped, coll):
    capped.put(f"/v1/{coll}/there", json={})
    before = store_revision(capped)
    over, exact = sized(CAP + 1), sized(CAP)
    for method, url in (("PUT", f"/v1/{coll}/a"), ("PUT", f"/v1/{coll}/there"), ("POST", f"/v1/{coll}")):
        assert_problem(capped.request(method, url, content=over), 413, "DocumentTooLarge")
    batch = {
        "ops": [
            {"op": "put", "collection": coll, "id": "b", "data": {}},
            {"op": "put", "collection": coll, "id": "c", "data": orjson.loads(over)},
        ]
    }
    body = assert_problem(capped.post("/v1/_batch", json=batch), 413, "DocumentTooLarge")
    assert body["op_index"] == 1
    batch = {"ops": [{"op": "put", "collection": coll, "id": "b", "data": {"b": {"x": "y" * 100}}}]}
    batch["ops"].append({"op": "patch", "collection": coll, "id": "b", "patch": doubling(20)})
    body = assert_problem(capped.post("/v1/_batch", json=batch), 413, "DocumentTooLarge")
    assert body["op_index"] == 1
    assert store_revision(capped) == before
    assert capped.get(f"/v1/{coll}/a").status_code == 404
    assert capped.put(f"/v1/{coll}/a", content=exact).status_code == 201


def test_a_batch_of_small_patches_cannot_write_a_large_document_again_and_again(capped, coll):
    # Each op is a revision with its document in the log: three patches of a few bytes on a
    # document of 1,900 bytes would write 5,700.
    capped.put(f"/v1/{coll}/d", content=sized(CAP - 100))
    before = store_revision(capped)
    ops = [{"op": "patch", "collection": coll, "id": "d", "patch": {"n": i}} for i in range(3)]
    body = assert_problem(capped.post("/v1/_batch", json={"ops": ops}), 413, "BatchTooLarge")
    assert body["op_index"] == 2 and str(BATCH_CAP) in body["detail"]
    assert store_revision(capped) == before
    # two of them, and a delete (which leaves no document, so it does not count), are served
    r = capped.post("/v1/_batch", json={"ops": [*ops[:2], {"op": "delete", "collection": coll, "id": "d"}]})
    assert r.status_code == 200, r.text
    assert capped.get(f"/v1/{coll}/d").status_code == 404


def test_the_limits_are_serve_flags() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    for flag in ("--max-document-bytes", "WATCHROUTE_MAX_DOCUMENT_BYTES", "--max-batch-bytes"):
        assert flag in result.output


@pytest.mark.parametrize(
    ("document", "ops"),
    [
        ({"a": [1, 2], "b": {"c": 3}}, [{"op": "copy", "from": "/b", "path": "/a/1"}]),
        ({"a": [1, 2], "b": {"c": 3}}, [{"op": "copy", "from": "/a/0", "path": "/a/-"}]),
        ({"a": [1, 2], "b": {"c": 3}}, [{"op": "copy", "from": "/a", "path": "/b/c"}]),
        (
            {"a": {"b": 1}},
            [{"op": "copy", "from": "/a", "path": "/a/c"}, {"op": "add", "path": "/a/c/d", "value": 2}],
        ),
        ({"a": [1]}, [{"op": "copy", "from": "/a", "path": "/a/5"}]),
        ({"a": 1}, [{"op": "copy", "from": "/x", "path": "/b"}]),
        ({"a": 1}, [{"op": "copy", "from": "/a", "path": "/x/y"}]),
        ({"a": 1}, [{"op": "copy", "from": "/a", "path": "/a/y"}]),
    ],
)
def test_copies_do_what_jsonpatch_does(document, ops):
    """The copy the limits apply themselves (to clone through orjson) does what RFC 6902 says,
    as jsonpatch does it: the same document, or a refusal."""
    row = Row("c", "i", 1, 1, orjson.dumps(document))
    try:
        expected = jsonpatch.JsonPatch(ops).apply(document)
    except (jsonpatch.JsonPatchException, JsonPointerException):
        with pytest.raises(Problem) as refused:
            json_patch(ops)(row, 1 << 20)
        assert refused.value.status == 422 and refused.value.reason == "BadPatch"
        assert "{" not in refused.value.detail and "[1" not in refused.value.detail  # nothing stored shown
    else:
        assert json_patch(ops)(row, 1 << 20) == expected
