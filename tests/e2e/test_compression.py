"""Large answers travel gzip-encoded to a client that accepts it; small ones, and every watch
stream, as they are."""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import httpx
import orjson
import pytest

from watchroute.compression import accepts_gzip

GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}


def _fill(api: httpx.Client, coll: str, count: int) -> None:
    ops = [
        {"op": "put", "collection": coll, "id": f"r{i:03d}", "data": {"symbol": f"S{i}", "price": i * 1.5}}
        for i in range(count)
    ]
    assert api.post("/v1/_batch", json={"ops": ops}).status_code == 200


@dataclass
class _Raw:
    status_code: int
    headers: httpx.Headers
    raw: bytes


def _raw(api: httpx.Client, path: str, headers: dict[str, str], **params: str | int | float) -> _Raw:
    """The answer as it came over the wire: httpx neither asks for nor undoes an encoding."""
    with api.stream("GET", path, params=params, headers=headers) as response:
        return _Raw(response.status_code, response.headers, b"".join(response.iter_raw()))


def test_a_big_list_comes_back_gzipped_and_decodes_to_the_same_page(api, coll):
    _fill(api, coll, 300)
    plain = _raw(api, f"/v1/{coll}", IDENTITY, limit=1000)
    packed = _raw(api, f"/v1/{coll}", GZIP, limit=1000)
    assert len(plain.raw) > 20_000 and "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert int(packed.headers["content-length"]) == len(packed.raw) < len(plain.raw) / 4
    assert orjson.loads(gzip.decompress(packed.raw)) == orjson.loads(plain.raw)
    assert packed.headers["etag"] == plain.headers["etag"]  # the same page, so a poller's 304 holds
    # q=0 refuses gzip.
    refused = _raw(api, f"/v1/{coll}", {"Accept-Encoding": "gzip;q=0"}, limit=1000)
    assert "content-encoding" not in refused.headers and refused.raw == plain.raw


def test_a_small_answer_is_sent_as_it_is(api, coll):
    _fill(api, coll, 2)
    small = _raw(api, f"/v1/{coll}", GZIP)
    assert "content-encoding" not in small.headers
    assert orjson.loads(small.raw)["items"][0]["id"] == "r000"
    one = _raw(api, f"/v1/{coll}/r000", GZIP)
    assert "content-encoding" not in one.headers and orjson.loads(one.raw)["id"] == "r000"


def test_a_big_resource_and_a_big_long_poll_answer_are_gzipped(api, coll):
    big = {"text": "watch " * 2000}
    assert api.put(f"/v1/{coll}/big", json=big).status_code == 201
    read = _raw(api, f"/v1/{coll}/big", GZIP)
    assert read.headers["content-encoding"] == "gzip"
    assert orjson.loads(gzip.decompress(read.raw))["data"] == big
    _fill(api, coll, 50)
    polled = _raw(api, f"/v1/{coll}", GZIP, watch="longpoll", since=0, timeout=1)
    assert polled.headers["content-encoding"] == "gzip"
    events = orjson.loads(gzip.decompress(polled.raw))["events"]
    assert len(events) == 51 and events[0]["object"]["data"] == big


def test_a_long_polls_initial_state_goes_page_by_page_uncompressed(api, coll):
    # Sent a page at a time as it is read, it has no body to compress, and is never buffered.
    _fill(api, coll, 50)
    polled = _raw(api, f"/v1/{coll}", GZIP, watch="longpoll", initial="true", timeout=1)
    assert polled.status_code == 200 and "content-encoding" not in polled.headers
    events = orjson.loads(polled.raw)["events"]
    assert [e["type"] for e in events] == ["ADDED"] * 50 + ["BOOKMARK"]


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
def test_watch_streams_are_never_compressed(api, coll, accept):
    _fill(api, coll, 100)  # more than enough to be compressed, were it an ordinary answer
    headers = {**GZIP, "Accept": accept}
    with api.stream("GET", f"/v1/{coll}", params={"watch": "true", "since": 0}, headers=headers) as stream:
        assert "content-encoding" not in stream.headers
        received = b""
        for chunk in stream.iter_raw():
            received += chunk
            if received.count(b'"ADDED"') >= 100:
                break
    assert b'"id":"r099"' in received  # plain text, every event as it went out


def test_accept_encoding_is_read_as_rfc_9110_says():
    assert accepts_gzip("gzip")
    assert accepts_gzip("br, gzip;q=0.5, deflate")
    assert accepts_gzip("GZIP ; q=1")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip; q=0.000")
    assert not accepts_gzip("deflate, br")
    assert not accepts_gzip(None)
    assert not accepts_gzip("")
