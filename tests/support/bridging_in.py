"""What the inbound bridge tests share: a bridge set up and awaited, and the log of a collection
read back whole (brokers of their own: brokers.py)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx

from tests.support.bridging import wait_for


def unique(prefix: str) -> str:
    """A name no other test (nor an earlier run against the same broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def put_bridge(client: httpx.Client, name: str, **config: Any) -> None:
    r = client.put(f"/v1/_bridges/{name}", json={"direction": "in", **config})
    assert r.status_code in (200, 201), r.text


def status(client: httpx.Client, name: str) -> dict[str, Any]:
    r = client.get(f"/v1/_bridges/{name}")
    assert r.status_code == 200, r.text
    return r.json()["status"]


def wait_running(client: httpx.Client, name: str, timeout: float = 30.0) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        try:
            shown = status(client, name)
        except httpx.HTTPError:
            return None
        return shown if shown["state"] == "running" else None

    return wait_for(running, timeout, 0.1, f"bridge {name} running")


def log_of(client: httpx.Client, collection: str) -> list[dict[str, Any]]:
    """Every change of `collection` in the log, in revision order (long-polls from 0)."""
    events: list[dict[str, Any]] = []
    since = 0
    while True:
        r = client.get(f"/v1/{collection}", params={"watch": "longpoll", "since": since, "timeout": 0.05})
        assert r.status_code == 200, r.text
        body = r.json()
        if not body["events"]:
            return events
        events.extend(body["events"])
        since = body["revision"]


def items_of(client: httpx.Client, collection: str) -> dict[str, dict[str, Any]]:
    """The collection's documents by id, every page of them."""
    items: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"limit": 1000}
    while True:
        r = client.get(f"/v1/{collection}", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        items.update((item["id"], item["data"]) for item in body["items"])
        if not body.get("continue"):
            return items
        params["continue"] = body["continue"]


CHANGES = ("ADDED", "MODIFIED", "DELETED")


def writes_by_id(events: list[dict[str, Any]]) -> Counter[str]:
    """How many revisions the log holds of each resource."""
    return Counter(event["object"]["id"] for event in events if event["type"] in CHANGES)
