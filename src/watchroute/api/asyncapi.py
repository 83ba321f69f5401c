"""`/asyncapi.json`: the watch route as an AsyncAPI 3.0 document.

OpenAPI describes requests and their answers; what a watch sends afterwards, event by event,
is what AsyncAPI is for. The document names the two ways in (streaming HTTP: SSE and NDJSON on
the watch URL; WebSocket: the same URL upgraded, or `/v1/_watch` multiplexed), the events in
full and patch format, and the multiplexed socket's ops and answers, with the REST models for
the resource and the problem details, so that the two documents agree. The server entries name
the host the document was fetched from.
"""

from __future__ import annotations

from typing import Any

from watchroute import __version__
from watchroute.api.models import ProblemDetails, Resource
from watchroute.revisions import MAX_REVISION

# What a watch sends, in every transport (in full or patch format); what a client sends on
# `/v1/_watch`, and what it gets there.
EVENTS = ("Change", "Patch", "Bookmark", "Error")
CLIENT_OPS = ("Subscribe", "Unsubscribe", "Auth", "Ping")
ANSWERS = ("Subscribed", "Unsubscribed", "Authenticated", "Pong", "SubscriptionEvent")
WATCH_QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "watch": {
            "type": "string",
            "enum": ["true", "1", "longpoll"],
            "description": "Watch instead of read (`longpoll`: one JSON answer per poll).",
        },
        "since": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_REVISION,
            "description": "Changes after this revision (`Last-Event-ID` means the same and wins). "
            "Older than the history horizon: 410 `Expired`.",
        },
        "initial": {
            "type": "boolean",
            "description": "First the current state as ADDED events, then a BOOKMARK with "
            "`initial_events_end`.",
        },
        "filter": {"type": "string", "description": "Only resources matching this filter expression."},
        "format": {
            "type": "string",
            "enum": ["full", "patch"],
            "description": "`patch`: MODIFIED carries an RFC 7386 merge patch.",
        },
        "conflate": {"type": "boolean", "description": "While behind, only the newest state per resource."},
        "heartbeat": {
            "type": "number",
            "minimum": 1,
            "maximum": 300,
            "description": "Seconds before a BOOKMARK.",
        },
        "timeout": {"type": "number", "description": "End the watch cleanly after this many seconds."},
    },
}


def _ref(path: str) -> dict[str, str]:
    return {"$ref": f"#/{path}"}


def _object(description: str, required: list[str], **properties: Any) -> dict[str, Any]:
    """A message's JSON object; `type` or `op` given as a string is the constant it must be."""
    for key in ("type", "op"):
        if isinstance(properties.get(key), str):
            properties[key] = {"type": "string", "const": properties[key]}
    return {"type": "object", "description": description, "required": required, "properties": properties}


REVISION = {"type": "integer", "minimum": 0}
SUB = {"type": "string", "maxLength": 256}


def _schemas() -> dict[str, Any]:
    """The events of a watch, and the models the REST document has too."""
    return {
        "Resource": Resource.model_json_schema(),
        "ProblemDetails": ProblemDetails.model_json_schema(),
        "Change": _object(
            "A committed change. Filtered watches keep membership: a resource that starts matching "
            "arrives as ADDED, one that stops as DELETED (with its new state). A DELETED made by "
            "the lapse of a lease (a write with `ttl`) says `expired: true`.",
            ["type", "revision", "object"],
            type={"type": "string", "enum": ["ADDED", "MODIFIED", "DELETED"]},
            revision=REVISION,
            expired={
                "type": "boolean",
                "const": True,
                "description": "On a DELETED only: the resource's lease lapsed (no client deleted it)",
            },
            object=_ref("components/schemas/Resource"),
        ),
        "Patch": _object(
            "A MODIFIED in `format=patch`: the merge patch from the previous state.",
            ["type", "revision", "id", "patch"],
            type="MODIFIED",
            revision=REVISION,
            id={"type": "string"},
            patch={"type": "object"},
        ),
        "Bookmark": _object(
            "Every change up to `revision` has been considered for this watch.",
            ["type", "revision"],
            type="BOOKMARK",
            revision=REVISION,
            initial_events_end={"type": "boolean"},
        ),
        "Error": _object(
            "The watch ends after it (410 `Expired`: list again, watch from there).",
            ["type", "error"],
            type="ERROR",
            error=_ref("components/schemas/ProblemDetails"),
        ),
    }


def _multiplexed_schemas() -> dict[str, Any]:
    """What goes over `/v1/_watch` besides the events: `sub` names a subscription."""
    options = {k: v for k, v in WATCH_QUERY["properties"].items() if k != "watch"}
    return {
        "Subscribe": _object(
            "Open a watch; the watch URL's parameters as fields.",
            ["op", "sub", "collection"],
            op="subscribe",
            sub=SUB,
            collection={"type": "string"},
            id={"type": "string"},
            **options,
        ),
        "Unsubscribe": _object("End a watch.", ["op", "sub"], op="unsubscribe", sub=SUB),
        "Auth": _object(
            "Present a fresh token without reconnecting; permissions are checked again.",
            ["op", "token"],
            op="auth",
            token={"type": "string"},
        ),
        "Ping": _object("Ask for a PONG.", ["op"], op="ping"),
        "Subscribed": _object(
            "The watch is open, from `revision` on.",
            ["type", "sub", "revision"],
            type="SUBSCRIBED",
            sub=SUB,
            revision=REVISION,
        ),
        "Unsubscribed": _object("The watch is closed.", ["type", "sub"], type="UNSUBSCRIBED", sub=SUB),
        "Authenticated": _object(
            "The new credential holds (its subject and expiry, when there is one).",
            ["type"],
            type="AUTHENTICATED",
            subject={"type": ["string", "null"]},
            expires_at={"type": ["number", "null"]},
        ),
        "Pong": _object("The answer to a ping.", ["type"], type="PONG"),
        "SubscriptionEvent": {
            "description": "A watch's event with the `sub` it belongs to; an ERROR ends only that "
            "subscription (a malformed message gets one without `sub`, and so does a connection whose "
            "credential no longer stands, just before it closes with 4401).",
            "allOf": [
                {"oneOf": [_ref(f"components/schemas/{name}") for name in EVENTS]},
                {"type": "object", "properties": {"sub": SUB}},
            ],
        },
    }


def _message(name: str) -> dict[str, Any]:
    """A message of the document: its payload is the schema of the same name, which says what it is."""
    return {"name": name, "contentType": "application/json", "payload": _ref(f"components/schemas/{name}")}


def document(host: str, secure: bool) -> dict[str, Any]:
    """The AsyncAPI document, its servers at `host` (the address the client used)."""
    watch_channel = {
        "servers": [_ref("servers/http"), _ref("servers/ws")],
        "messages": {name: _ref(f"components/messages/{name}") for name in EVENTS},
        "bindings": {"ws": {"method": "GET", "query": WATCH_QUERY}},
    }
    collection = {
        "address": "/v1/{collection}",
        "title": "Watch a collection",
        "description": "`GET /v1/{collection}?watch=true`: SSE with `Accept: text/event-stream` "
        "(each event one message, `id: <revision>`), NDJSON otherwise (one event per line), one "
        "event per text message when upgraded to a WebSocket.",
        "parameters": {"collection": {"description": "A collection name."}},
        **watch_channel,
    }
    resource = {
        "address": "/v1/{collection}/{id}",
        "title": "Watch one resource",
        "description": "`GET /v1/{collection}/{id}?watch=true`, on the same transports.",
        "parameters": {
            "collection": {"description": "A collection name."},
            "id": {"description": "A resource id."},
        },
        **watch_channel,
    }
    multiplexed = {
        "address": "/v1/_watch",
        "title": "Many watches on one WebSocket",
        "servers": [_ref("servers/ws")],
        "messages": {name: _ref(f"components/messages/{name}") for name in CLIENT_OPS + ANSWERS},
    }

    def operation(action: str, channel: str, names: tuple[str, ...], summary: str) -> dict[str, Any]:
        return {
            "action": action,
            "channel": _ref(f"channels/{channel}"),
            "summary": summary,
            "messages": [_ref(f"channels/{channel}/messages/{name}") for name in names],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "watchroute",
            "version": __version__,
            "description": "Every change pushed as it commits. Events carry the store's global, "
            "gap-free revision: resume with `since` (or `Last-Event-ID`) and miss nothing within "
            "the history horizon.",
        },
        "servers": {
            "http": {
                "host": host,
                "protocol": "https" if secure else "http",
                "description": "SSE and NDJSON",
            },
            "ws": {"host": host, "protocol": "wss" if secure else "ws", "description": "WebSocket"},
        },
        "channels": {"collection": collection, "resource": resource, "multiplexed": multiplexed},
        "operations": {
            "watchCollection": operation("receive", "collection", EVENTS, "Changes to a collection"),
            "watchResource": operation("receive", "resource", EVENTS, "Changes to one resource"),
            "sendOps": operation("send", "multiplexed", CLIENT_OPS, "Client messages"),
            "receiveAnswers": operation("receive", "multiplexed", ANSWERS, "Server messages"),
        },
        "components": {
            "schemas": {**_schemas(), **_multiplexed_schemas()},
            "messages": {name: _message(name) for name in EVENTS + CLIENT_OPS + ANSWERS},
        },
    }
