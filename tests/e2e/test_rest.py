"""REST reads and writes against a real server: CRUD, revisions, preconditions, PATCH, list."""

from __future__ import annotations

from typing import Any

from tests.support.rest import JSON_PATCH, MERGE, UUID7, assert_problem, store_revision


def etag(revision: int) -> str:
    return f'"{revision}"'


# -- CRUD ----------------------------------------------------------------------------------------


def test_put_creates_then_replaces(api, coll):
    before = store_revision(api)
    r = api.put(f"/v1/{coll}/AAPL", json={"price": 1, "tags": ["a"]})
    assert r.status_code == 201
    assert r.headers["location"] == f"/v1/{coll}/AAPL"
    created = r.json()
    assert created == {
        "id": "AAPL",
        "revision": before + 1,
        "created_revision": before + 1,
        "data": {"price": 1, "tags": ["a"]},
    }
    assert r.headers["etag"] == etag(before + 1)

    r = api.put(f"/v1/{coll}/AAPL", json={"price": 2})
    assert r.status_code == 200
    assert "location" not in r.headers
    assert r.json() == {
        "id": "AAPL",
        "revision": before + 2,
        "created_revision": before + 1,
        "data": {"price": 2},
    }
    assert r.headers["etag"] == etag(before + 2)

    r = api.get(f"/v1/{coll}/AAPL")
    assert r.status_code == 200
    assert r.headers["etag"] == etag(before + 2)
    assert r.json()["data"] == {"price": 2}  # a replace, not a merge


def test_post_assigns_time_ordered_ids(api, coll):
    ids = []
    for n in range(20):
        r = api.post(f"/v1/{coll}", json={"n": n})
        assert r.status_code == 201, r.text
        body = r.json()
        assert UUID7.match(body["id"]), body["id"]
        assert r.headers["location"] == f"/v1/{coll}/{body['id']}"
        assert r.headers["etag"] == etag(body["revision"])
        assert body["created_revision"] == body["revision"]
        ids.append(body["id"])
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids  # creation order
    r = api.get(f"/v1/{coll}/{ids[3]}")
    assert r.status_code == 200 and r.json()["data"] == {"n": 3}
    listed = [item["id"] for item in api.get(f"/v1/{coll}").json()["items"]]
    assert listed == ids


def test_get_absent_is_a_404_problem(api, coll):
    body = assert_problem(api.get(f"/v1/{coll}/nope"), 404, "NotFound")
    assert "nope" in body["detail"]


def test_if_none_match_on_get(api, coll):
    rev = api.put(f"/v1/{coll}/a", json={"v": 1}).json()["revision"]
    r = api.get(f"/v1/{coll}/a", headers={"If-None-Match": etag(rev)})
    assert r.status_code == 304
    assert r.headers["etag"] == etag(rev)
    assert r.content == b""
    assert api.get(f"/v1/{coll}/a", headers={"If-None-Match": f'"x", W/{etag(rev)}'}).status_code == 304
    assert api.get(f"/v1/{coll}/a", headers={"If-None-Match": etag(rev - 1)}).status_code == 200
    api.put(f"/v1/{coll}/a", json={"v": 2})
    r = api.get(f"/v1/{coll}/a", headers={"If-None-Match": etag(rev)})
    assert r.status_code == 200 and r.json()["data"] == {"v": 2}
    assert_problem(api.get(f"/v1/{coll}/zz", headers={"If-None-Match": etag(rev)}), 404, "NotFound")


def test_delete_returns_last_state_at_the_deletions_revision(api, coll):
    created = api.put(f"/v1/{coll}/a", json={"v": 1}).json()
    api.patch(f"/v1/{coll}/a", json={"w": 2}, headers=MERGE)
    r = api.delete(f"/v1/{coll}/a")
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "id": "a",
        "revision": created["revision"] + 2,
        "created_revision": created["revision"],
        "data": {"v": 1, "w": 2},
    }
    assert store_revision(api) == body["revision"]
    assert_problem(api.get(f"/v1/{coll}/a"), 404, "NotFound")
    assert_problem(api.delete(f"/v1/{coll}/a"), 404, "NotFound")
    assert store_revision(api) == body["revision"]  # the refused delete took no revision
    assert api.get(f"/v1/{coll}").json()["items"] == []
    # created again: a new life with a new created_revision
    again = api.put(f"/v1/{coll}/a", json={})
    assert again.status_code == 201
    assert again.json()["created_revision"] == body["revision"] + 1


def test_revisions_are_global_gap_free_and_increasing(api, coll):
    other = coll + "-b"
    start = store_revision(api)
    revisions = [
        api.put(f"/v1/{coll}/a", json={}).json()["revision"],
        api.put(f"/v1/{other}/a", json={}).json()["revision"],
        api.post(f"/v1/{coll}", json={}).json()["revision"],
        api.patch(f"/v1/{other}/a", json={"x": 1}, headers=MERGE).json()["revision"],
    ]
    assert api.put(f"/v1/{coll}/a", json={}, headers={"If-Match": '"999999"'}).status_code == 412
    revisions.append(api.delete(f"/v1/{coll}/a").json()["revision"])
    revisions.append(
        api.patch(
            f"/v1/{other}/a", json=[{"op": "add", "path": "/y", "value": 1}], headers=JSON_PATCH
        ).json()["revision"]
    )
    assert revisions == list(range(start + 1, start + 7))
    assert store_revision(api) == start + 6
    assert api.get(f"/v1/{other}").json()["revision"] == start + 6


def test_created_revision_is_kept_across_replace_and_patch(api, coll):
    first = api.put(f"/v1/{coll}/a", json={"v": 1}).json()
    second = api.put(f"/v1/{coll}/a", json={"v": 2}).json()
    third = api.patch(f"/v1/{coll}/a", json={"w": 1}, headers=MERGE).json()
    fourth = api.patch(f"/v1/{coll}/a", json=[{"op": "remove", "path": "/v"}], headers=JSON_PATCH).json()
    assert [b["created_revision"] for b in (first, second, third, fourth)] == [first["revision"]] * 4
    assert [b["revision"] for b in (first, second, third, fourth)] == list(
        range(first["revision"], first["revision"] + 4)
    )
    assert fourth["data"] == {"w": 1}
    assert api.get(f"/v1/{coll}/a").json() == fourth


# -- optimistic concurrency ----------------------------------------------------------------------


def test_put_if_match(api, coll):
    rev = api.put(f"/v1/{coll}/a", json={"v": 1}).json()["revision"]
    before = store_revision(api)
    body = assert_problem(
        api.put(f"/v1/{coll}/a", json={"v": 2}, headers={"If-Match": etag(rev + 100)}),
        412,
        "PreconditionFailed",
    )
    assert str(rev) in body["detail"]
    assert store_revision(api) == before
    assert api.get(f"/v1/{coll}/a").json()["data"] == {"v": 1}

    r = api.put(f"/v1/{coll}/a", json={"v": 2}, headers={"If-Match": etag(rev)})
    assert r.status_code == 200 and r.json()["revision"] == before + 1
    # the old ETag is stale now
    assert_problem(
        api.put(f"/v1/{coll}/a", json={"v": 3}, headers={"If-Match": etag(rev)}), 412, "PreconditionFailed"
    )
    assert api.put(f"/v1/{coll}/a", json={"v": 3}, headers={"If-Match": "*"}).status_code == 200


def test_if_match_star_on_absent_and_if_none_match_star_on_existing(api, coll):
    before = store_revision(api)
    assert_problem(api.put(f"/v1/{coll}/a", json={}, headers={"If-Match": "*"}), 412, "PreconditionFailed")
    assert_problem(
        api.put(f"/v1/{coll}/a", json={}, headers={"If-Match": etag(before)}), 412, "PreconditionFailed"
    )
    assert store_revision(api) == before
    assert api.get(f"/v1/{coll}/a").status_code == 404

    r = api.put(f"/v1/{coll}/a", json={"v": 1}, headers={"If-None-Match": "*"})
    assert r.status_code == 201
    assert_problem(
        api.put(f"/v1/{coll}/a", json={"v": 2}, headers={"If-None-Match": "*"}), 412, "PreconditionFailed"
    )
    assert store_revision(api) == before + 1
    assert api.get(f"/v1/{coll}/a").json()["data"] == {"v": 1}


def test_patch_and_delete_if_match(api, coll):
    rev = api.put(f"/v1/{coll}/a", json={"v": 1}).json()["revision"]
    stale = {"If-Match": etag(rev - 1)}
    before = store_revision(api)
    assert_problem(
        api.patch(f"/v1/{coll}/a", json={"v": 2}, headers={**MERGE, **stale}), 412, "PreconditionFailed"
    )
    assert_problem(
        api.patch(
            f"/v1/{coll}/a", json=[{"op": "add", "path": "/w", "value": 1}], headers={**JSON_PATCH, **stale}
        ),
        412,
        "PreconditionFailed",
    )
    assert_problem(api.delete(f"/v1/{coll}/a", headers=stale), 412, "PreconditionFailed")
    assert store_revision(api) == before
    assert api.get(f"/v1/{coll}/a").json()["data"] == {"v": 1}

    r = api.patch(f"/v1/{coll}/a", json={"v": 2}, headers={**MERGE, "If-Match": etag(rev)})
    assert r.status_code == 200 and r.json()["data"] == {"v": 2}
    r = api.delete(f"/v1/{coll}/a", headers={"If-Match": etag(rev + 1)})
    assert r.status_code == 200 and r.json()["revision"] == rev + 2


def test_malformed_precondition_headers_are_400(api, coll):
    api.put(f"/v1/{coll}/a", json={})
    before = store_revision(api)
    for headers in ({"If-Match": "abc"}, {"If-Match": '"1", "2"'}, {"If-None-Match": '"3"'}):
        assert_problem(api.put(f"/v1/{coll}/a", json={"v": 1}, headers=headers), 400, "BadParameter")
    # "²" is a digit to str.isdigit() but not to int(): this was a 500
    assert_problem(
        api.put(f"/v1/{coll}/a", json={"v": 1}, headers={"If-Match": '"²"'.encode("latin-1")}),
        400,
        "BadParameter",
    )
    assert store_revision(api) == before


# -- PATCH ---------------------------------------------------------------------------------------


def test_merge_patch_semantics(api, coll):
    api.put(
        f"/v1/{coll}/a",
        json={"title": "x", "author": {"name": "n", "email": "e"}, "tags": ["a", "b"], "keep": 1},
    )
    patch = {"title": "y", "author": {"email": None, "url": "u"}, "tags": ["c"], "new": {"k": {"z": None}}}
    r = api.patch(
        f"/v1/{coll}/a", json=patch, headers={"Content-Type": "application/merge-patch+json; charset=utf-8"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {
        "title": "y",
        "author": {"name": "n", "url": "u"},
        "tags": ["c"],
        "keep": 1,
        "new": {"k": {}},
    }
    r = api.patch(f"/v1/{coll}/a", json={"author": None, "missing": None}, headers=MERGE)
    assert r.json()["data"] == {"title": "y", "tags": ["c"], "keep": 1, "new": {"k": {}}}
    # an empty merge patch is still a change, with a revision of its own
    rev = r.json()["revision"]
    assert api.patch(f"/v1/{coll}/a", json={}, headers=MERGE).json()["revision"] == rev + 1


def test_json_patch_operations(api, coll):
    api.put(f"/v1/{coll}/a", json={"a": 1, "list": [1, 2], "obj": {"k": "v"}})
    ops = [
        {"op": "test", "path": "/a", "value": 1},
        {"op": "add", "path": "/list/-", "value": 3},
        {"op": "replace", "path": "/obj/k", "value": "w"},
        {"op": "remove", "path": "/a"},
        {"op": "copy", "from": "/obj", "path": "/copy"},
        {"op": "move", "from": "/list", "path": "/moved"},
    ]
    r = api.patch(f"/v1/{coll}/a", json=ops, headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"obj": {"k": "w"}, "copy": {"k": "w"}, "moved": [1, 2, 3]}


def test_json_patch_failures_write_nothing(api, coll):
    api.put(f"/v1/{coll}/a", json={"a": 1, "list": [1]})
    url = f"/v1/{coll}/a"
    before = store_revision(api)

    # a failing test, even after ops that would apply, writes nothing
    body = assert_problem(
        api.patch(
            url,
            json=[{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 2}],
            headers=JSON_PATCH,
        ),
        409,
        "Conflict",
    )
    assert "test" in body["detail"]
    for bad in (
        [{"op": "frobnicate", "path": "/a"}],
        [{"path": "/a", "value": 1}],
        [{"op": "add", "value": 1}],
        [{"op": "add", "path": 5, "value": 1}],
        ["add"],
        {"op": "add", "path": "/a", "value": 1},
    ):
        assert_problem(api.patch(url, json=bad, headers=JSON_PATCH), 400, "BadPatch")
    for unapplicable in (
        [{"op": "remove", "path": "/nope"}],
        [{"op": "replace", "path": "/nope/deeper", "value": 1}],
        [{"op": "add", "path": "/list/7", "value": 1}],
        [{"op": "move", "from": "/nope", "path": "/b"}],
        [{"op": "replace", "path": "", "value": [1, 2]}],  # the resource must stay an object
    ):
        assert_problem(api.patch(url, json=unapplicable, headers=JSON_PATCH), 422, "BadPatch")
    # a merge patch must be an object
    assert_problem(api.patch(url, json=[{"a": 1}], headers=MERGE), 400, "BadPatch")
    assert store_revision(api) == before
    assert api.get(url).json()["data"] == {"a": 1, "list": [1]}


def test_patch_media_types_and_absent(api, coll):
    api.put(f"/v1/{coll}/a", json={"a": 1})
    before = store_revision(api)
    for content_type in ("text/plain", "application/xml", "application/json-patch"):
        body = assert_problem(
            api.patch(f"/v1/{coll}/a", content=b'{"a": 2}', headers={"Content-Type": content_type}),
            415,
            "UnsupportedMediaType",
        )
        assert content_type in body["detail"]
    assert_problem(api.patch(f"/v1/{coll}/a", content=b'{"a": 2}'), 415, "UnsupportedMediaType")

    assert_problem(api.patch(f"/v1/{coll}/absent", json={"a": 1}, headers=MERGE), 404, "NotFound")
    assert_problem(
        api.patch(f"/v1/{coll}/absent", json=[{"op": "add", "path": "/a", "value": 1}], headers=JSON_PATCH),
        404,
        "NotFound",
    )
    assert store_revision(api) == before
    assert api.get(f"/v1/{coll}/absent").status_code == 404


def test_nesting_deeper_than_storable_is_refused(api, coll):
    """orjson reads 1024 levels but writes 254: deeper resources were a 500 after the write began."""

    def deep(n: int) -> bytes:
        return b'{"a":' * n + b"1" + b"}" * n

    assert api.put(f"/v1/{coll}/ok", content=deep(200)).status_code == 201
    before = store_revision(api)
    assert_problem(api.put(f"/v1/{coll}/a", content=deep(300)), 422, "TooDeep")
    assert_problem(api.post(f"/v1/{coll}", content=deep(1000)), 422, "TooDeep")
    assert_problem(api.patch(f"/v1/{coll}/ok", content=deep(300), headers=MERGE), 422, "TooDeep")
    assert_problem(api.patch(f"/v1/{coll}/ok", content=deep(1020), headers=MERGE), 422, "TooDeep")
    assert store_revision(api) == before


# -- list ----------------------------------------------------------------------------------------


def test_list_pagination_returns_every_item_once(api, coll):
    for n in range(25):
        api.put(f"/v1/{coll}/item{n:02d}", json={"n": n})
    first_revision = store_revision(api)
    seen: list[str] = []
    pages = 0
    token = None
    while True:
        params: dict[str, Any] = {"limit": 10}
        if token:
            params["continue"] = token
        r = api.get(f"/v1/{coll}", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        # every page reports the first page's revision, whatever was written in between
        assert page["revision"] == first_revision
        seen += [item["id"] for item in page["items"]]
        token = page["continue"]
        api.put(f"/v1/{coll}-other/x", json={"page": pages})
        if token is None:
            break
        assert len(page["items"]) == 10
    assert pages == 3
    assert seen == [f"item{n:02d}" for n in range(25)]
    # a fresh listing sees the later revision
    assert api.get(f"/v1/{coll}").json()["revision"] == first_revision + 3


def test_list_filter_and_limit(api, coll):
    for n in range(12):
        api.put(f"/v1/{coll}/i{n:02d}", json={"n": n, "kind": "even" if n % 2 == 0 else "odd"})
    r = api.get(f"/v1/{coll}", params={"filter": "kind=even,n>=4"})
    assert r.status_code == 200
    assert [i["data"]["n"] for i in r.json()["items"]] == [4, 6, 8, 10]
    assert r.json()["continue"] is None

    seen: list[int] = []
    params: dict[str, Any] = {"filter": "kind=odd", "limit": 2}
    while True:
        page = api.get(f"/v1/{coll}", params=params).json()
        seen += [i["data"]["n"] for i in page["items"]]
        if page["continue"] is None:
            break
        params["continue"] = page["continue"]
    assert seen == [1, 3, 5, 7, 9, 11]

    token = api.get(f"/v1/{coll}", params={"filter": "kind=odd", "limit": 2}).json()["continue"]
    assert_problem(
        api.get(f"/v1/{coll}", params={"filter": "kind=even", "limit": 2, "continue": token}),
        400,
        "BadContinue",
    )
    assert len(api.get(f"/v1/{coll}", params={"limit": 10000}).json()["items"]) == 12
    assert api.get(f"/v1/{coll}-empty").json() == {
        "items": [],
        "revision": store_revision(api),
        "continue": None,
    }


def test_list_bad_parameters(api, coll):
    api.put(f"/v1/{coll}/a", json={})
    for token in ("!!!", "bm9wZQ", "W10", "eyJhIjoxfQ", "é"):  # junk, "nope", "[]", '{"a":1}'
        assert_problem(api.get(f"/v1/{coll}", params={"continue": token}), 400, "BadContinue")
    for limit in ("0", "-1", "10001", "ten"):
        body = assert_problem(api.get(f"/v1/{coll}", params={"limit": limit}), 400, "BadParameter")
        assert "limit" in body["detail"]
    latest = store_revision(api)
    body = assert_problem(api.get(f"/v1/{coll}", params={"revision": latest + 5}), 400, "FutureRevision")
    assert str(latest + 5) in body["detail"]
    r = api.get(f"/v1/{coll}", params={"revision": latest})
    assert r.status_code == 200 and r.json()["revision"] == latest


def test_list_etag_answers_304_until_something_commits(api, coll):
    api.put(f"/v1/{coll}/a", json={"v": 1})
    first = api.get(f"/v1/{coll}")
    tag = first.headers["etag"]
    assert tag == f'"{first.json()["revision"]}"'
    again = api.get(f"/v1/{coll}", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    api.put(f"/v1/{coll}/a", json={"v": 2})
    fresh = api.get(f"/v1/{coll}", headers={"If-None-Match": tag})
    assert fresh.status_code == 200
    assert fresh.json()["items"][0]["data"] == {"v": 2}
