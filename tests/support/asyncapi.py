"""Reading `/asyncapi.json`: its references resolved, and a validator for what an operation may
carry (tests/e2e/test_asyncapi.py, test_schemas.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs

from tests.support.server import ServerProcess

SPEC_SCHEMA = Path(__file__).parent.parent / "e2e" / "data" / "asyncapi-3.0.0.schema.json"


def fetch(server: ServerProcess) -> dict[str, Any]:
    r = httpx.get(server.url + "/asyncapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def messages_of(doc: dict[str, Any], operation: str) -> jsonschema_rs.Validator:
    """A validator for what `operation` may carry: one of its messages' payloads."""
    payloads = []
    for message_ref in doc["operations"][operation]["messages"]:
        message = resolve(doc, resolve(doc, message_ref["$ref"])["$ref"])
        payloads.append(message["payload"])
    return jsonschema_rs.validator_for({"oneOf": payloads, "components": doc["components"]})


def assert_described(validator: jsonschema_rs.Validator, message: dict[str, Any]) -> None:
    errors = [e.message for e in validator.iter_errors(message)]
    assert not errors, (message, errors)
