"""The parameters of a watch: one definition, the same on every transport.

`WatchParams` is what a client may ask of a watch. The HTTP watch route parses its query string
with it, a WebSocket watch its upgrade's query string or its `subscribe` message, and the OpenAPI
and AsyncAPI documents describe its JSON Schema; the client, the command line and the dashboard
take their defaults and bounds from the constants here (the dashboard is checked against them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError

from watchroute.core.problems import invalid_parameters
from watchroute.core.revisions import MAX_REVISION
from watchroute.watch.heartbeat import HEARTBEAT_DEFAULT, HEARTBEAT_MAX, HEARTBEAT_MIN

# Seconds without output before the server sends a BOOKMARK: the client's liveness signal.
# Longest `timeout` a watch may ask for, in seconds.
TIMEOUT_MAX = 86400.0
# Longest filter expression a request may carry (the settings may allow less).
FILTER_MAX_LENGTH = 4096

FORMATS = ("full", "patch")
PATCH_FORMAT = "patch"
# `watch=` values that open a stream; `longpoll` answers once.
STREAMING = ("true", "1")
LONGPOLL = "longpoll"


def _number(value: Any) -> Any:
    """true and false are not numbers, though Python counts them as 1 and 0."""
    if isinstance(value, bool):
        raise ValueError("must be a number")
    return value


Number = BeforeValidator(_number)
T = TypeVar("T")


@dataclass(slots=True)
class WatchParams:
    """The watch route's parameters, the same on a collection and on a resource."""

    watch: Annotated[
        str | None,
        Field(
            description="`true` streams changes (SSE with `Accept: text/event-stream`, else NDJSON); "
            "`longpoll` answers once with the events ready.",
            pattern="^(true|false|1|0|longpoll)$",
        ),
    ] = None
    since: Annotated[
        int | None,
        Field(
            ge=0,
            le=MAX_REVISION,
            description="Deliver changes with revision > since (`Last-Event-ID` means the same and "
            "wins). Older than the history horizon: 410 `Expired`.",
        ),
        Number,
    ] = None
    filter: Annotated[
        str | None,
        Field(max_length=FILTER_MAX_LENGTH, description="Only resources matching this filter expression."),
    ] = None
    initial: Annotated[
        bool,
        Field(
            description="First the current state as ADDED events, then a BOOKMARK with `initial_events_end`."
        ),
    ] = False
    heartbeat: Annotated[
        float,
        Field(ge=HEARTBEAT_MIN, le=HEARTBEAT_MAX, description="Seconds without output before a BOOKMARK."),
        Number,
    ] = HEARTBEAT_DEFAULT
    timeout: Annotated[
        float | None,
        Field(gt=0, le=TIMEOUT_MAX, description="End the watch cleanly after this many seconds."),
        Number,
    ] = None
    format: Annotated[
        Literal["full", "patch"],
        Field(description="`patch`: a MODIFIED event carries the merge patch from the previous state."),
    ] = "full"
    conflate: Annotated[
        bool, Field(description="While behind, get only the newest state of each resource.")
    ] = False

    @property
    def watching(self) -> bool:
        return self.watch in STREAMING or self.watch == LONGPOLL

    @property
    def patches(self) -> bool:
        return self.format == PATCH_FORMAT


_ADAPTER: TypeAdapter[WatchParams] = TypeAdapter(WatchParams)
# Parameters of the HTTP watch only: a subscription on `/v1/_watch` is always a stream.
HTTP_ONLY = frozenset({"watch"})


def parse_params(adapter: TypeAdapter[T], values: Mapping[str, Any]) -> T:
    """The parameters `adapter` declares, from `values` (a query string's, or a message's
    fields); other names are left to their owners. 400 BadParameter for a bad value."""
    try:
        return adapter.validate_python(dict(values))
    except ValidationError as exc:
        raise invalid_parameters(exc.errors()) from None


def query_parameters(adapter: TypeAdapter[Any]) -> Iterator[dict[str, Any]]:
    """The parameters `adapter` declares, as OpenAPI query parameters."""
    for name, prop in adapter.json_schema(by_alias=True)["properties"].items():
        description = prop.pop("description", None)
        prop.pop("title", None)
        yield {"name": name, "in": "query", "required": False, "schema": prop, "description": description}


def parse_watch_params(values: Mapping[str, Any]) -> WatchParams:
    return parse_params(_ADAPTER, values)


def json_schema() -> dict[str, Any]:
    """The parameters as one JSON Schema object (AsyncAPI's WebSocket binding, the subscribe
    message's fields)."""
    schema = _ADAPTER.json_schema()
    properties = {name: _plain(prop) for name, prop in schema["properties"].items()}
    return {"type": "object", "properties": properties}


def openapi_parameters() -> list[dict[str, Any]]:
    """The parameters as OpenAPI query parameters, and the `Last-Event-ID` header."""
    return [
        *query_parameters(_ADAPTER),
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Resume after this revision (as `since`, and wins over it).",
        },
    ]


def _plain(prop: dict[str, Any]) -> dict[str, Any]:
    """A property without pydantic's `title`, and an optional one without its `null` branch
    (a message leaves out what it does not ask for)."""
    prop = {k: v for k, v in prop.items() if k != "title"}
    branches = prop.pop("anyOf", None)
    if branches is not None:
        prop = {**next(b for b in branches if b.get("type") != "null"), **prop}
    return prop
