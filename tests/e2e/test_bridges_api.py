"""`/v1/_bridges`: configurations validated, stored, listed with their status, removed; their
secrets never answered (docs/bridges.md)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.bridging import START_SECONDS
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One server for the module, given the time a loaded machine takes to start it."""
    proc = ServerProcess(tmp_path_factory.mktemp("bridges-api")).start(timeout=START_SECONDS)
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            yield client
    finally:
        proc.stop()


@pytest.fixture
def name() -> str:
    return "b" + uuid.uuid4().hex[:10]


def test_a_bridge_is_set_read_listed_and_removed(api: httpx.Client, name: str) -> None:
    config = {
        "direction": "out",
        "url": "https://hooks.example.invalid/orders",
        "collection": "orders",
        "filter": "status=paid",
        "secret": "s3cr3t-value",
    }
    r = api.put(f"/v1/_bridges/{name}", json=config)
    assert r.status_code == 201, r.text
    assert "s3cr3t-value" not in r.text
    got = api.get(f"/v1/_bridges/{name}")
    assert got.status_code == 200
    body = got.json()
    assert body["config"]["collection"] == "orders"
    assert body["config"]["secret_set"] is True
    assert "secret" not in body["config"]
    assert "s3cr3t-value" not in got.text
    assert body["status"]["state"] in ("starting", "running", "paused", "failed", "standby")
    listed = api.get("/v1/_bridges").json()["items"]
    assert name in [item["name"] for item in listed]
    assert "s3cr3t-value" not in api.get("/v1/_bridges").text
    assert api.delete(f"/v1/_bridges/{name}").status_code == 200
    assert api.get(f"/v1/_bridges/{name}").status_code == 404
    assert api.delete(f"/v1/_bridges/{name}").status_code == 404


def test_a_password_in_the_url_is_masked(api: httpx.Client, name: str) -> None:
    config = {
        "direction": "out",
        "url": "amqp://guest:pa55word@127.0.0.1:5672/",
        "collection": "orders",
        "subject": "orders",
    }
    assert api.put(f"/v1/_bridges/{name}", json=config).status_code == 201
    got = api.get(f"/v1/_bridges/{name}")
    assert "pa55word" not in got.text
    assert got.json()["config"]["url"] == "amqp://guest:***@127.0.0.1:5672/"
    api.delete(f"/v1/_bridges/{name}")


@pytest.mark.parametrize(
    ("config", "pointer"),
    [
        ({"direction": "out", "url": "ftp://x/", "collection": "orders"}, "/"),
        ({"direction": "in", "url": "https://x/", "collection": "o", "topic": "t", "id": "topic:1"}, "/"),
        ({"direction": "in", "url": "mqtt://127.0.0.1", "collection": "orders", "topic": "a/+"}, "/"),
        ({"direction": "out", "url": "nats://127.0.0.1", "collection": "orders"}, "/"),
        ({"direction": "out", "url": "nats://127.0.0.1", "collection": "Orders!", "subject": "x"}, "/"),
        (
            {
                "direction": "out",
                "url": "redis://127.0.0.1",
                "collection": "o",
                "stream": "s",
                "filter": "a==",
            },
            "/",
        ),
        ({"direction": "sideways", "url": "redis://127.0.0.1", "collection": "o"}, "/direction"),
        ({"direction": "out", "url": "redis://127.0.0.1", "collection": "o", "stream": "s", "x": 1}, "/x"),
        ({"url": "redis://127.0.0.1", "collection": "o", "stream": "s"}, "/direction"),
    ],
)
def test_a_bad_configuration_is_refused_and_nothing_is_stored(
    api: httpx.Client, name: str, config: dict[str, object], pointer: str
) -> None:
    r = api.put(f"/v1/_bridges/{name}", json=config)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert pointer in [e["pointer"] for e in r.json()["errors"]]
    assert api.get(f"/v1/_bridges/{name}").status_code == 404


def test_a_bad_name_is_refused(api: httpx.Client) -> None:
    config = {"direction": "out", "url": "redis://127.0.0.1", "collection": "o", "stream": "s"}
    assert api.put("/v1/_bridges/Bad Name", json=config).status_code == 400


def test_the_secrets_collection_is_not_reachable(api: httpx.Client, name: str) -> None:
    config = {"direction": "out", "url": "http://127.0.0.1:9/", "collection": "o", "secret": "hidden-1"}
    assert api.put(f"/v1/_bridges/{name}", json=config).status_code == 201
    for path in ("/v1/_bridge_secrets", f"/v1/_bridge_secrets/{name}"):
        r = api.get(path)
        assert r.status_code in (400, 404)
        assert "hidden-1" not in r.text
    watched = api.get("/v1/_bridges", params={"watch": "longpoll", "since": 0, "timeout": 1})
    assert name in watched.text
    assert "hidden-1" not in watched.text
    api.delete(f"/v1/_bridges/{name}")
