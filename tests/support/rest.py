"""What the REST tests share: a server per module and the shape of a problem response."""

from __future__ import annotations

import re
from typing import Any

import httpx

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def store_revision(c: httpx.Client) -> int:
    r = c.get("/v1/anything")
    assert r.status_code == 200, r.text
    return r.json()["revision"]


def assert_problem(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert {"type", "title", "status", "detail", "reason"} <= body.keys()
    assert body["status"] == status
    assert body["reason"] == reason
    assert isinstance(body["detail"], str) and body["detail"]
    return body
