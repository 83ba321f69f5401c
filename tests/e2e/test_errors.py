"""Refused requests against a real server: the right problem details, and nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.rest import JSON_PATCH, MERGE, assert_problem, store_revision


def body_writes(c: httpx.Client, coll: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every route that takes a body, as (method, url, headers); `coll`/`there` exists."""
    return [
        ("PUT", f"/v1/{coll}/there", {}),
        ("PUT", f"/v1/{coll}/new", {}),
        ("POST", f"/v1/{coll}", {}),
        ("PATCH", f"/v1/{coll}/there", MERGE),
        ("PATCH", f"/v1/{coll}/there", JSON_PATCH),
        ("POST", "/v1/_batch", {}),
    ]


def test_malformed_json_and_empty_bodies(api, coll):
    api.put(f"/v1/{coll}/there", json={"v": 1})
    before = store_revision(api)
    for method, url, headers in body_writes(api, coll):
        for content in (
            b"{",
            b'{"a":}',
            b"{} x",
            b"NaN",
            b'{"a": nan}',
            b"\xff\xfe",
            b"{'a': 1}",
            b'{"a":"\\ud800"}',
        ):
            r = api.request(method, url, content=content, headers=headers)
            body = assert_problem(r, 400, "InvalidJSON")
            assert "JSON" in body["detail"]
        for content in (b"", b"  \n\t"):
            body = assert_problem(
                api.request(method, url, content=content, headers=headers), 400, "InvalidJSON"
            )
            assert "empty" in body["detail"]
    assert store_revision(api) == before
    assert api.get(f"/v1/{coll}/there").json()["data"] == {"v": 1}
    assert api.get(f"/v1/{coll}/new").status_code == 404


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"[]", "an array"),
        (b'"s"', "a string"),
        (b"1.5", "a number"),
        (b"null", "null"),
        (b"true", "a boolean"),
    ],
)
def test_a_body_that_is_not_an_object(api, coll, content, kind):
    api.put(f"/v1/{coll}/there", json={"v": 1})
    before = store_revision(api)
    for method, url in (("PUT", f"/v1/{coll}/there"), ("PUT", f"/v1/{coll}/new"), ("POST", f"/v1/{coll}")):
        body = assert_problem(api.request(method, url, content=content), 400, "NotAnObject")
        assert kind in body["detail"]
    assert_problem(api.post("/v1/_batch", content=content), 400, "NotAnObject")
    # a merge patch must be an object, a JSON patch an array
    assert_problem(api.patch(f"/v1/{coll}/there", content=content, headers=MERGE), 400, "BadPatch")
    if content != b"[]":
        assert_problem(api.patch(f"/v1/{coll}/there", content=content, headers=JSON_PATCH), 400, "BadPatch")
    assert store_revision(api) == before


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Bad", "BadName"),
        ("1abc", "BadName"),
        ("a" * 64, "BadName"),
        ("a.b", "BadName"),
        ("a%20b", "BadName"),
        ("-a", "BadName"),
        ("_x", "ReservedName"),
        ("_collection", "ReservedName"),
    ],
)
def test_bad_collection_names(api, name, reason):
    before = store_revision(api)
    for method, url, content in (
        ("GET", f"/v1/{name}", None),
        ("GET", f"/v1/{name}/a", None),
        ("GET", f"/v1/{name}?watch=longpoll&timeout=1", None),
        ("PUT", f"/v1/{name}/a", b"{}"),
        ("POST", f"/v1/{name}", b"{}"),
        ("DELETE", f"/v1/{name}/a", None),
    ):
        body = assert_problem(api.request(method, url, content=content), 400, reason)
        assert name[:20].replace("%20", " ") in body["detail"]
    assert store_revision(api) == before


def test_longest_and_odd_but_valid_names(api):
    name = "a" + "b-_9" * 15 + "zz"  # 63 characters
    assert len(name) == 63
    ident = "A" + "b._:-" * 50 + "zz"  # 253 characters
    assert len(ident) == 253
    r = api.put(f"/v1/{name}/{ident}", json={})
    assert r.status_code == 201, r.text
    assert api.get(f"/v1/{name}/{ident}").json()["id"] == ident


@pytest.mark.parametrize("ident", ["-x", ".x", "a" * 254, "a b", "a,b", "ä", "a%00b", "a@b"])
def test_bad_ids(api, coll, ident):
    before = store_revision(api)
    for method, content in (("GET", None), ("PUT", b"{}"), ("PATCH", b"{}"), ("DELETE", None)):
        r = api.request(method, f"/v1/{coll}/{quote(ident, safe='%')}", content=content, headers=MERGE)
        assert_problem(r, 400, "BadId")
    assert store_revision(api) == before


def test_bad_filter_gives_the_position(api, coll):
    api.put(f"/v1/{coll}/a", json={"n": 1})
    body = assert_problem(api.get(f"/v1/{coll}", params={"filter": "n = = 1"}), 400, "BadFilter")
    assert body["position"] == 4
    assert "position 4" in body["detail"]
    for text in ("n >", "n in (1,2", "(", "n ~ 1", "n = 1,", 'n = "open', "n.", "!"):
        for url, extra in (
            (f"/v1/{coll}", {}),
            (f"/v1/{coll}/a", {}),
            (f"/v1/{coll}", {"watch": "true", "timeout": "1"}),
            (f"/v1/{coll}", {"watch": "longpoll", "timeout": "1"}),
        ):
            body = assert_problem(api.get(url, params={"filter": text, **extra}), 400, "BadFilter")
            assert isinstance(body["position"], int) and 0 <= body["position"] <= len(text), text
            assert f"position {body['position']}" in body["detail"]


def test_bad_watch_parameters(api, coll):
    api.put(f"/v1/{coll}/a", json={})
    latest = store_revision(api)
    for url in (f"/v1/{coll}", f"/v1/{coll}/a"):
        for watch in ("true", "longpoll"):
            for params in ({"since": "abc"}, {"since": "-1"}, {"heartbeat": "0"}, {"timeout": "-1"}):
                body = assert_problem(
                    api.get(url, params={"watch": watch, "timeout": "1", **params}), 400, "BadParameter"
                )
                assert next(iter(params)) in body["detail"]
            body = assert_problem(
                api.get(url, params={"watch": watch, "timeout": "1", "since": "0", "initial": "true"}),
                400,
                "BadParameter",
            )
            assert "since" in body["detail"]
            assert_problem(
                api.get(url, params={"watch": watch, "timeout": "1", "since": latest + 10}),
                400,
                "FutureRevision",
            )
            assert_problem(
                api.get(url, params={"watch": watch, "timeout": "1"}, headers={"Last-Event-ID": "x1"}),
                400,
                "BadParameter",
            )
        assert_problem(api.get(url, params={"watch": "maybe"}), 400, "BadParameter")


def test_oversized_bodies(make_server):
    proc = make_server(max_body_bytes=1000)
    with httpx.Client(base_url=proc.url, timeout=10) as c:
        c.put("/v1/s/there", json={})
        before = store_revision(c)
        big = json.dumps({"a": "x" * 1990}).encode()
        assert len(big) > 1000

        def chunked() -> Iterator[bytes]:
            for i in range(0, len(big), 100):
                yield big[i : i + 100]

        batch = json.dumps({"ops": [{"op": "put", "collection": "s", "id": "b", "data": {"a": "x" * 1990}}]})
        for method, url, headers, content in (
            ("PUT", "/v1/s/a", {}, big),
            ("POST", "/v1/s", {}, big),
            ("PATCH", "/v1/s/there", MERGE, big),
            ("POST", "/v1/_batch", {}, batch.encode()),
        ):
            body = assert_problem(c.request(method, url, content=content, headers=headers), 413, "TooLarge")
            assert "1000" in body["detail"]
            r = c.request(method, url, content=chunked(), headers=headers)
            assert r.request.headers.get("transfer-encoding") == "chunked"
            assert_problem(r, 413, "TooLarge")
        assert store_revision(c) == before
        assert c.get("/v1/s/a").status_code == 404
        # the limit itself is allowed
        exact = json.dumps({"a": "x" * 991}).encode()
        assert len(exact) == 1000
        assert c.put("/v1/s/a", content=exact).status_code == 201


def test_unknown_routes_and_wrong_methods(api, coll):
    for path in ("/nope", "/v2/stocks", "/v1/a/b/c", "/v1"):
        assert_problem(api.get(path), 404, "NotFound")
    before = store_revision(api)
    for method, path in (
        ("POST", f"/v1/{coll}/a"),
        ("PUT", f"/v1/{coll}"),
        ("PATCH", f"/v1/{coll}"),
        ("DELETE", f"/v1/{coll}"),
        ("PUT", "/v1/_batch"),
        ("DELETE", "/healthz"),
    ):
        r = api.request(method, path, content=b"{}")
        assert_problem(r, 405, "MethodNotAllowed")
        assert r.headers.get("allow")
    assert store_revision(api) == before


# -- garbage in, never a 5xx, and nothing written unless it succeeded ------------------------------

GARBAGE = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
pointers = st.lists(st.sampled_from(["a", "b", "0", "-", "", "~0", "~1", "x y"]), max_size=3).map(
    lambda parts: "".join("/" + p for p in parts)
)
patch_ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "nope"])},
    optional={"path": pointers | json_values, "from": pointers | json_values, "value": json_values},
)
batch_ops = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from(["create", "put", "patch", "delete", "x"]) | json_values,
        "collection": st.sampled_from(["g", "h", "Bad", "_r"]) | json_values,
        "id": st.sampled_from(["a", "b", "-"]) | json_values,
        "data": st.dictionaries(st.text(max_size=4), json_values, max_size=3) | json_values,
        "patch": st.lists(patch_ops, max_size=3) | json_values,
        "if_match": st.integers(0, 5) | json_values,
    },
)


def check_outcome(c: httpx.Client, r: httpx.Response, before: int) -> None:
    assert r.status_code < 500, r.text
    after = store_revision(c)
    if r.status_code < 300:
        assert after > before
    else:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.json()["status"] == r.status_code
        assert after == before, r.text


@GARBAGE
@given(content=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_garbage_bodies(api, content):
    api.put("/v1/g/a", json={"a": [1, {"b": 2}]})
    for method, url, headers in body_writes(api, "g"):
        before = store_revision(api)
        check_outcome(api, api.request(method, url, content=content, headers=headers), before)


@GARBAGE
@given(patch=st.lists(patch_ops | json_values, max_size=4), merge=json_values)
def test_garbage_patches(api, patch, merge):
    api.put("/v1/g/p", json={"a": [1, {"b": 2}], "": {"0": "x"}, "x y": 1})
    before = store_revision(api)
    check_outcome(api, api.patch("/v1/g/p", json=patch, headers=JSON_PATCH), before)
    before = store_revision(api)
    check_outcome(api, api.patch("/v1/g/p", json=merge, headers=MERGE), before)


@GARBAGE
@given(ops=st.lists(batch_ops, max_size=4), wrap=st.booleans())
def test_garbage_batches(api, ops, wrap):
    api.put("/v1/g/a", json={"a": 1})
    before = store_revision(api)
    r = api.post("/v1/_batch", json={"ops": ops} if wrap else ops)
    check_outcome(api, r, before)
    if r.status_code == 200:
        assert store_revision(api) == before + len(ops)


@GARBAGE
@given(
    collection=st.text(max_size=70),
    ident=st.text(max_size=260),
    # what h11 lets a client send: visible latin-1, inner spaces ("²" was a 500)
    if_match=st.none()
    | st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=12).map(
        str.strip
    ),
)
def test_garbage_names_and_headers(api, collection, ident, if_match):
    url = f"/v1/{quote(collection, safe='')}/{quote(ident, safe='')}"
    headers = {} if if_match is None else {"If-Match": if_match.encode("latin-1")}
    for method in ("PUT", "DELETE"):
        before = store_revision(api)
        r = api.request(method, url, content=b"{}", headers=headers)
        assert r.status_code < 500, r.text
        if r.status_code >= 300:
            assert store_revision(api) == before
