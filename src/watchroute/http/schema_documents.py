"""Collection schemas in `/openapi.json` and `/asyncapi.json`.

For each collection with a schema, the documents gain its own paths (OpenAPI) and watch channel
(AsyncAPI), whose resources and events carry the schema as their `data`, so that a generated
client knows the shape of a `stocks` resource and of its events. Components, per collection C:
`C` (the schema itself), `C.resource`, `C.list` (OpenAPI) and `C.change` (AsyncAPI). The
schema's own references (`#/$defs/...`) are rewritten to where it now sits in the document.
"""

from __future__ import annotations

from typing import Any

import orjson

COMPONENTS = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": COMPONENTS + name}


def _relocated(node: Any, base: str) -> Any:
    """`node` with every local `$ref` ("#...") pointing below `base` instead of the root."""
    if isinstance(node, dict):
        moved = {k: _relocated(v, base) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            moved["$ref"] = base + ref[1:]
        return moved
    if isinstance(node, list):
        return [_relocated(v, base) for v in node]
    return node


def _collection_components(
    components: dict[str, Any], collection: str, schema: dict[str, Any], resource: dict[str, Any]
) -> None:
    components[collection] = _relocated(schema, COMPONENTS + collection)
    typed = orjson.loads(orjson.dumps(resource))
    typed["title"] = f"{collection} resource"
    typed["properties"]["data"] = _ref(collection)
    components[f"{collection}.resource"] = typed


def openapi(base: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`base` (left as it is) with the paths and components of each collection in `schemas`."""
    if not schemas:
        return base
    document = orjson.loads(orjson.dumps(base))
    components = document["components"]["schemas"]
    paths = document["paths"]
    generic = {"/v1/{collection}": "/v1/{c}", "/v1/{collection}/{id}": "/v1/{c}/{id}"}
    for collection, schema in schemas.items():
        _collection_components(components, collection, schema, components["Resource"])
        page = orjson.loads(orjson.dumps(components["ListPage"]))
        page["title"] = f"{collection} list"
        page["properties"]["items"] = {"type": "array", "items": _ref(f"{collection}.resource")}
        components[f"{collection}.list"] = page
        for template, path in generic.items():
            item = _typed_path(paths[template], collection)
            paths[path.replace("{c}", collection)] = item
    return document


def _typed_path(item: dict[str, Any], collection: str) -> dict[str, Any]:
    """A copy of a generic path item for one collection: no `collection` parameter, and the
    collection's types where the generic one has any object."""
    typed = _retyped(item, collection)
    for operation in typed.values():
        operation["operationId"] = f"{operation['operationId']}_{collection}"
        parameters = operation.get("parameters", [])
        operation["parameters"] = [p for p in parameters if p.get("name") != "collection"]
        operation["tags"] = [collection]
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:  # a create's or a put's body is the document
            body["schema"] = _ref(collection)
    return typed


def _retyped(node: Any, collection: str) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref == COMPONENTS + "Resource":
            return _ref(f"{collection}.resource")
        if ref == COMPONENTS + "ListPage":
            return _ref(f"{collection}.list")
        return {k: _retyped(v, collection) for k, v in node.items()}
    if isinstance(node, list):
        return [_retyped(v, collection) for v in node]
    return node


def asyncapi(document: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The AsyncAPI `document` (changed in place) with a watch channel per collection in
    `schemas`, whose changes carry the collection's resource."""
    components = document["components"]["schemas"]
    messages = document["components"]["messages"]
    for collection, schema in schemas.items():
        _collection_components(components, collection, schema, components["Resource"])
        change = orjson.loads(orjson.dumps(components["Change"]))
        change["description"] = f"A committed change of {collection}. " + change["description"]
        change["properties"]["object"] = _ref(f"{collection}.resource")
        components[f"{collection}.change"] = change
        messages[f"{collection}.change"] = {
            "name": f"{collection}.change",
            "contentType": "application/json",
            "payload": _ref(f"{collection}.change"),
        }
        names = (f"{collection}.change", "Bookmark", "Error")
        channel = f"collection.{collection}"
        document["channels"][channel] = {
            "address": f"/v1/{collection}",
            "title": f"Watch {collection}",
            "description": f"`GET /v1/{collection}?watch=true`, on the transports of the generic "
            "collection channel; its resources match the collection's schema.",
            "servers": document["channels"]["collection"]["servers"],
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        }
        document["operations"][f"watch.{collection}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"Changes to {collection}",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in names],
        }
    return document
