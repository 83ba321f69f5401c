"""Numbers are stored as sent: an integer beyond what the JSON library keeps exactly (64 bits)
is refused, not rounded to the nearest float; filter literals compare exactly whatever their size."""

from __future__ import annotations

from tests.support.rest import JSON_PATCH, MERGE, assert_problem, store_revision

BIG = "123456789012345678901234567890"


def test_integers_beyond_64_bits_are_refused_not_rounded(api, coll):
    api.put(f"/v1/{coll}/there", json={"v": 1})
    before = store_revision(api)
    doc = b'{"n": %s}' % BIG.encode()
    for method, url, headers, content in (
        ("PUT", f"/v1/{coll}/a", {}, doc),
        ("POST", f"/v1/{coll}", {}, doc),
        ("PUT", f"/v1/{coll}/there", {}, b'{"n": -9223372036854775809}'),
        ("PUT", f"/v1/{coll}/there", {}, b'{"n": 18446744073709551616}'),
        ("PUT", f"/v1/{coll}/there", {}, b'{"deep": [[{"n": 1%s}]]}' % (b"0" * 40)),
        ("PATCH", f"/v1/{coll}/there", MERGE, doc),
        (
            "PATCH",
            f"/v1/{coll}/there",
            JSON_PATCH,
            b'[{"op": "add", "path": "/n", "value": %s}]' % BIG.encode(),
        ),
        (
            "POST",
            "/v1/_batch",
            {},
            b'{"ops": [{"op": "put", "collection": "%s", "id": "b", "data": %s}]}' % (coll.encode(), doc),
        ),
    ):
        body = assert_problem(
            api.request(method, url, content=content, headers=headers), 422, "NumberOutOfRange"
        )
        assert "2**64-1" in body["detail"]
    assert store_revision(api) == before
    assert api.get(f"/v1/{coll}/a").status_code == 404
    assert api.get(f"/v1/{coll}/there").json()["data"] == {"v": 1}


def test_64_bit_integers_and_long_digit_strings_are_kept_exactly(api, coll):
    sent = (
        b'{"max": 18446744073709551615, "min": -9223372036854775808, "s": "%s", "f": 1.5e300,'
        b' "g": 12345678901234567890123.5}' % BIG.encode()
    )
    r = api.put(f"/v1/{coll}/a", content=sent)
    assert r.status_code == 201, r.text
    assert b'"max":18446744073709551615,"min":-9223372036854775808' in r.content
    data = api.get(f"/v1/{coll}/a").json()["data"]
    assert data["max"] == 2**64 - 1 and data["min"] == -(2**63) and data["s"] == BIG


def test_filters_with_integers_beyond_64_bits_compare_exactly(api, coll):
    api.put(f"/v1/{coll}/small", json={"n": 5})
    api.put(f"/v1/{coll}/huge", json={"n": 1.5e30})
    for text, ids in ((f"n<{BIG}", ["small"]), (f"n>{BIG}", ["huge"]), (f"n={BIG}", [])):
        r = api.get(f"/v1/{coll}", params={"filter": text})
        assert r.status_code == 200, r.text
        assert [item["id"] for item in r.json()["items"]] == ids
    # as many digits as a filter may hold (int() reads up to 4300)
    r = api.get(f"/v1/{coll}", params={"filter": "n<" + "9" * 4090})
    assert r.status_code == 200, r.text
    assert [item["id"] for item in r.json()["items"]] == ["huge", "small"]


def test_a_deep_body_with_long_digits_is_refused_cleanly(api, coll):
    # The exact check reads the body a second time; a body nested as deep as orjson reads must
    # not break it.
    deep = b"[" * 1000 + b"12345678901234567890123" + b"]" * 1000
    r = api.put(f"/v1/{coll}/a", content=b'{"a": %s}' % deep)
    assert r.status_code == 422, r.text
    assert r.json()["reason"] in ("TooDeep", "NumberOutOfRange")
