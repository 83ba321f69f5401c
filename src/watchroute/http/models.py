"""Schemas of the REST bodies, for the OpenAPI document (the hot path encodes with orjson)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from watchroute.core.revisions import MAX_REVISION


def _without_default(schema: dict[str, Any]) -> None:
    """Drops the null default of a field that is left out rather than null."""
    schema.pop("default", None)


# A lease's expiry (a write with `ttl`), RFC 3339 in UTC; absent on a permanent resource.
EXPIRES_AT = Field(
    None,
    description="When the lease lapses and the resource is deleted; absent when it is permanent",
    json_schema_extra=_without_default,
)


class Resource(BaseModel):
    id: str
    revision: int = Field(description="The revision of the resource's last change")
    created_revision: int
    expires_at: datetime | SkipJsonSchema[None] = EXPIRES_AT
    data: dict[str, Any]


class Written(BaseModel):
    """A write's answer: the resource as the write left it (a DELETE: its last state, with the
    deletion's revision). Without a `read` grant on the collection the answer has no `data`:
    a write must not become a way to read."""

    id: str
    revision: int = Field(description="The revision of this write")
    created_revision: int
    expires_at: datetime | SkipJsonSchema[None] = EXPIRES_AT
    # Left out, never null: SkipJsonSchema keeps null out of the schema, the hook drops its default.
    data: dict[str, Any] | SkipJsonSchema[None] = Field(
        None,
        description="Absent when the credential may not read the collection",
        json_schema_extra=_without_default,
    )


class ListPage(BaseModel):
    items: list[Resource]
    revision: int = Field(description="Watch with since=revision to miss nothing after this list")
    continue_: str | None = Field(None, alias="continue")


class LongPollAnswer(BaseModel):
    """What a read with `watch=longpoll` answers: the events ready (the AsyncAPI document
    describes each), and the revision to poll from next."""

    events: list[dict[str, Any]]
    revision: int = Field(description="Poll again with since=revision")


# The JSON a read answers: the list or the resource, or, with `watch=longpoll`, the events ready.
ListOrPoll = ListPage | LongPollAnswer
ResourceOrPoll = Resource | LongPollAnswer


class ProblemDetails(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    reason: str = Field(description="Stable machine code: BadFilter, Expired, NotFound, ...")


class BatchOp(BaseModel):
    op: Literal["create", "put", "patch", "delete"]
    collection: str
    id: str | None = None
    data: dict[str, Any] | None = None
    patch: dict[str, Any] | list[Any] | None = Field(
        None, description="An object is a merge patch (RFC 7386), an array a JSON patch (RFC 6902)"
    )
    if_match: int | None = Field(None, ge=0, le=MAX_REVISION)
    ttl: float | None = Field(None, ge=1, description="create, put, patch: seconds until it expires")


class BatchRequest(BaseModel):
    ops: list[BatchOp]


class BatchResult(BaseModel):
    revision: int
    results: list[Written]


PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemDetails, "content": {"application/problem+json": {}}}
    for status in (400, 404, 410, 412, 413, 415, 422)
}

# A read with `watch=true` answers 200 with a stream of watch events instead of JSON: SSE when
# the client accepts text/event-stream, else NDJSON (the AsyncAPI document describes the events).
WATCH_STREAMS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON; with `watch=true`, a stream of watch events (SSE or NDJSON)",
        "content": {
            "text/event-stream": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}
