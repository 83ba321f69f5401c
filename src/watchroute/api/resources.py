"""REST routes of a collection and its resources, and the watch route on the same URLs."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response

from watchroute.api import preconditions
from watchroute.api.bodies import read_json, read_object
from watchroute.api.models import PROBLEMS, WATCH_STREAMS, ListOrPoll, ResourceOrPoll, Written
from watchroute.capture import captured_collection
from watchroute.compression import compressed
from watchroute.core.change import Change, resource_json
from watchroute.core.filter import Filter, FilterError, compile_filter
from watchroute.leases import parse_ttl
from watchroute.names import check_collection, check_id, new_id
from watchroute.patches import JSON_PATCH, for_media_type, reads_document
from watchroute.problems import bad_request, future_revision, not_found
from watchroute.revisions import MAX_REVISION, parse_revision
from watchroute.runtime import Runtime
from watchroute.security.identity import identity_of
from watchroute.security.rules import restrict
from watchroute.store import Row, WriteOp
from watchroute.transports.longpoll import poll
from watchroute.transports.ndjson import NDJSONFraming
from watchroute.transports.sse import SSEFraming
from watchroute.transports.stream import WatchStream
from watchroute.watch import WatchSpec, open_watch

router = APIRouter(prefix="/v1", tags=["resources"])

LONGPOLL_DEFAULT_TIMEOUT = 30.0
LONGPOLL_MAX_TIMEOUT = 300.0


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def resource_response(row_json: bytes, revision: int, status: int = 200, **headers: str) -> Response:
    return Response(
        row_json,
        status_code=status,
        media_type="application/json",
        headers={"ETag": preconditions.etag(revision), **headers},
    )


def parse_filter(text: str | None, max_length: int = 4096, max_clauses: int = 64) -> Filter | None:
    if text is None or text == "":
        return None
    try:
        return compile_filter(text, max_length=max_length, max_clauses=max_clauses)
    except FilterError as exc:
        raise bad_request("BadFilter", f"bad filter: {exc}", position=exc.position) from None


def encode_continue(after_id: str, revision: int, filter_text: str | None) -> str:
    token = orjson.dumps({"a": after_id, "r": revision, "f": filter_text})
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode_continue(token: str, filter_text: str | None) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = orjson.loads(raw)
        after_id = state["a"]
        if not isinstance(after_id, str):
            raise ValueError
        revision = parse_revision(state["r"], "a continue token's revision", reason="BadContinue", text=False)
    except (ValueError, KeyError, TypeError):
        raise bad_request("BadContinue", "the continue token is not one this server made") from None
    if state.get("f") != filter_text:
        raise bad_request("BadContinue", "a continue token must be used with the same filter")
    return after_id, revision


def last_event_id(value: str | None) -> int | None:
    if value is None:
        return None
    return parse_revision(value.strip(), "Last-Event-ID")


WatchParam = Annotated[
    str | None,
    Query(
        description="`true` streams changes (SSE with `Accept: text/event-stream`, else NDJSON); "
        "`longpoll` answers once with the events ready.",
        pattern="^(true|false|1|0|longpoll)$",
    ),
]
SinceParam = Annotated[
    int | None, Query(ge=0, le=MAX_REVISION, description="Deliver changes with revision > since.")
]
FilterParam = Annotated[str | None, Query(max_length=4096, description="Filter expression.")]
HeartbeatParam = Annotated[
    float, Query(ge=1, le=300, description="Seconds without output before a BOOKMARK.")
]
TimeoutParam = Annotated[
    float | None, Query(gt=0, le=86400, description="End the watch after this many seconds.")
]
LastEventID = Annotated[str | None, Header(alias="Last-Event-ID")]
FormatParam = Annotated[
    Literal["full", "patch"],
    Query(description="`patch`: a MODIFIED event carries the merge patch from the previous state."),
]
ConflateParam = Annotated[
    bool, Query(description="While behind, get only the newest state of each resource.")
]


@dataclass
class WatchQuery:
    """The watch route's parameters, the same on a collection and on a resource."""

    watch: WatchParam = None
    since: SinceParam = None
    filter: FilterParam = None
    initial: bool = False
    heartbeat: HeartbeatParam = 15
    timeout: TimeoutParam = None
    format: FormatParam = "full"
    conflate: ConflateParam = False
    last_event: LastEventID = None

    @property
    def watching(self) -> bool:
        return self.watch in ("true", "1", "longpoll")


async def _watch(
    request: Request, collection: str, id: str | None, q: WatchQuery, flt: Filter | None
) -> Response:
    runtime = runtime_of(request)
    resumed = last_event_id(q.last_event)
    spec = WatchSpec(
        collection,
        id,
        resumed if resumed is not None else q.since,
        flt,
        q.initial and resumed is None,
        format=q.format,
        conflate=q.conflate,
        identity=identity_of(request),
    )
    settings = runtime.settings
    if q.watch == "longpoll":
        wait = min(q.timeout or LONGPOLL_DEFAULT_TIMEOUT, LONGPOLL_MAX_TIMEOUT)
        spec.transport = "longpoll"
        opened = await open_watch(runtime, spec)
        answer = await poll(opened, wait, settings.max_events_per_write)
        return await compressed(request, answer, settings.compress_min_bytes)
    framing = (
        SSEFraming(settings.sse_retry_ms, q.format == "patch")
        if "text/event-stream" in request.headers.get("accept", "")
        else NDJSONFraming(q.format == "patch")
    )
    spec.transport = "sse" if isinstance(framing, SSEFraming) else "ndjson"
    opened = await open_watch(runtime, spec)
    return WatchStream(
        opened,
        framing,
        heartbeat=q.heartbeat,
        timeout=q.timeout,
        max_events_per_write=settings.max_events_per_write,
    )


def _filter(request: Request, text: str | None) -> Filter | None:
    s = runtime_of(request).settings
    return parse_filter(text, s.max_filter_length, s.max_filter_clauses)


def _read_rule(request: Request, collection: str) -> Any:
    """The rule the caller reads `collection` through (None: all of it); 401/403 otherwise."""
    return runtime_of(request).security.authorize(identity_of(request), "read", collection)


def _write_op(
    request: Request,
    kind: str,
    collection: str,
    id: str,
    if_match: str | None,
    if_none_match: str | None = None,
) -> WriteOp:
    """A write to one resource, its names, preconditions and permission checked before the
    body is read: a refused writer costs no upload."""
    check_collection(collection)
    check_id(id)
    if collection in runtime_of(request).captured:
        raise captured_collection(collection)
    pre = preconditions.parse(if_match, if_none_match)
    runtime = runtime_of(request)
    ttl = request.query_params.get("ttl")
    if ttl is not None and kind == "delete":
        raise bad_request("BadTTL", "a delete takes no ttl")
    guard = runtime.security.write_guard(identity_of(request), kind, collection, id)
    return WriteOp(
        kind,
        collection,
        id,
        if_match=pre.if_match,
        must_exist=pre.must_exist,
        must_not_exist=pre.must_not_exist or kind == "create",
        guard=guard,
        check=None if kind == "delete" else runtime.schemas.check,
        ttl=None if ttl is None else parse_ttl(ttl, runtime.settings.max_ttl_seconds),
    )


@router.get(
    "/{collection}",
    response_model=ListOrPoll,
    responses={**PROBLEMS, **WATCH_STREAMS},
    summary="List a collection, or watch it",
)
async def list_or_watch_collection(
    request: Request,
    collection: str,
    q: Annotated[WatchQuery, Depends()],
    limit: Annotated[int, Query(ge=1, le=10000)] = 500,
    continue_: Annotated[str | None, Query(alias="continue")] = None,
    revision: Annotated[
        int | None,
        Query(ge=0, le=MAX_REVISION, description="Serve a state at least as new as this revision."),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Any:
    check_collection(collection)
    return await list_or_watch(request, collection, q, limit, continue_, revision, if_none_match)


async def list_or_watch(
    request: Request,
    collection: str,
    q: WatchQuery,
    limit: int,
    continue_: str | None,
    revision: int | None,
    if_none_match: str | None,
) -> Response:
    """A list of `collection` (whose name is checked), or a watch of it."""
    flt = _filter(request, q.filter)
    if q.watching:
        return await _watch(request, collection, None, q, flt)
    runtime = runtime_of(request)
    rule = _read_rule(request, collection)  # refused before anything is said of the collection
    latest = preconditions.etag(runtime.store.revision)
    if if_none_match is not None and not continue_ and latest in if_none_match:
        # What this instance has read may lag the database (another instance's commit not yet
        # read): only the committed revision can say that nothing has changed since.
        latest = preconditions.etag(await runtime.store.committed_revision())
    if if_none_match is not None and not continue_ and latest in if_none_match:
        # Nothing has committed since the list this client holds: a poller pays no body.
        return Response(status_code=304, headers={"ETag": latest})
    if revision is not None and revision > runtime.store.revision:
        latest = await runtime.store.committed_revision()
        if revision > latest:
            raise future_revision(revision, latest)
    after_id, first_revision = None, None
    if continue_:
        after_id, first_revision = decode_continue(continue_, q.filter)
    page = await runtime.store.list(collection, restrict(rule, flt), limit, after_id)
    # Every page of one listing reports its first page's revision: watching from there
    # replays whatever changed while the pages were read, so nothing is missed.
    list_revision = first_revision if first_revision is not None else page.revision
    token = encode_continue(page.next_after_id, list_revision, q.filter) if page.next_after_id else None
    items = b",".join(
        resource_json(r.id, r.revision, r.created_revision, r.data_json, r.expires_at) for r in page.rows
    )
    body = b'{"items":[%s],"revision":%d,"continue":%s}' % (
        items,
        list_revision,
        orjson.dumps(token),
    )
    # A first page is the state at its revision: its ETag lets a poller ask "anything new?".
    headers = {} if continue_ else {"ETag": preconditions.etag(list_revision)}
    page_response = Response(body, media_type="application/json", headers=headers)
    return await compressed(request, page_response, runtime.settings.compress_min_bytes)


@router.get(
    "/{collection}/{id}",
    response_model=ResourceOrPoll,
    responses={**PROBLEMS, **WATCH_STREAMS},
    summary="Read a resource, or watch it",
)
async def get_or_watch_resource(
    request: Request,
    collection: str,
    id: str,
    q: Annotated[WatchQuery, Depends()],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Any:
    check_collection(collection)
    check_id(id)
    return await get_or_watch(request, collection, id, q, if_none_match)


async def get_or_watch(
    request: Request, collection: str, id: str, q: WatchQuery, if_none_match: str | None
) -> Response:
    """A resource of `collection` (name and id checked), or a watch of it."""
    flt = _filter(request, q.filter)
    if q.watching:
        return await _watch(request, collection, id, q, flt)
    rule = _read_rule(request, collection)
    row = await runtime_of(request).store.get(collection, id)
    if row is None or (rule is not None and not rule.matches(row.data)):
        raise not_found(collection, id)  # a document the rule hides is, to the caller, absent
    if if_none_match is not None and preconditions.etag(row.revision) in if_none_match:
        return Response(status_code=304, headers={"ETag": preconditions.etag(row.revision)})
    response = resource_response(_row_json(row), row.revision)
    return await compressed(request, response, runtime_of(request).settings.compress_min_bytes)


def request_path(request: Request) -> str:
    """`request.url.path`, without building the whole URL (host header, parsing) to get it."""
    return request.scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def _row_json(row: Row) -> bytes:
    return resource_json(row.id, row.revision, row.created_revision, row.data_json, row.expires_at)


def written_json(id: str, revision: int, created_revision: int) -> bytes:
    """A write's answer without the document: for a credential that may write but not read."""
    return b'{"id":%s,"revision":%d,"created_revision":%d}' % (orjson.dumps(id), revision, created_revision)


async def _write_one(request: Request, op: WriteOp) -> Response:
    [change] = await runtime_of(request).store.write([op])
    return written_response(request, op, change)


def written_response(request: Request, op: WriteOp, change: Change) -> Response:
    """A write's answer: the resource as it left it, or without `data` to a writer who may not read."""
    runtime = runtime_of(request)
    if runtime.security.may_read(identity_of(request), op.collection):
        body = resource_json(
            change.id, change.revision, change.created_revision, change.data_json, change.expires_at
        )
    else:
        body = written_json(change.id, change.revision, change.created_revision)
    if change.type == "ADDED":
        path = request_path(request).rstrip("/")
        location = f"{path}/{change.id}" if op.kind == "create" else path
        return resource_response(body, change.revision, 201, Location=location)
    return resource_response(body, change.revision)


IfMatch = Annotated[str | None, Header(description='"<revision>" or *')]
IfNoneMatch = Annotated[str | None, Header(description="* to create only")]
# Read by `_write_op` from the query (the write front calls the routes without it), documented here.
TTL = {
    "parameters": [
        {
            "name": "ttl",
            "in": "query",
            "required": False,
            "schema": {"type": "number", "minimum": 1},
            "description": "Seconds until the resource expires and is deleted (a lease; at most "
            "max_ttl_seconds). Without it the resource is permanent.",
        }
    ]
}


@router.post(
    "/{collection}",
    status_code=201,
    response_model=Written,
    responses=PROBLEMS,
    summary="Create a resource with an assigned id",
    openapi_extra=TTL,
)
async def create_resource(request: Request, collection: str) -> Any:
    op = _write_op(request, "create", collection, new_id(), None)
    op.data = await read_object(request, runtime_of(request).settings.max_body_bytes)
    return await _write_one(request, op)


@router.put(
    "/{collection}/{id}",
    response_model=Written,
    responses=PROBLEMS,
    summary="Create or replace a resource",
    openapi_extra=TTL,
)
async def put_resource(
    request: Request,
    collection: str,
    id: str,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Any:
    op = _write_op(request, "put", collection, id, if_match, if_none_match)
    op.data = await read_object(request, runtime_of(request).settings.max_body_bytes)
    return await _write_one(request, op)


@router.patch(
    "/{collection}/{id}",
    response_model=Written,
    responses=PROBLEMS,
    summary="Patch a resource (merge patch or JSON patch)",
    openapi_extra=TTL,
)
async def patch_resource(request: Request, collection: str, id: str, if_match: IfMatch = None) -> Any:
    op = _write_op(request, "patch", collection, id, if_match)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    document = await read_json(request, runtime_of(request).settings.max_body_bytes)
    op.patch = for_media_type(media_type, document)
    if media_type == JSON_PATCH and reads_document(document):
        _read_rule(request, collection)  # a `test` op is a read: it takes the read grant
    return await _write_one(request, op)


@router.delete(
    "/{collection}/{id}",
    response_model=Written,
    responses=PROBLEMS,
    summary="Delete a resource; answers its last state",
)
async def delete_resource(request: Request, collection: str, id: str, if_match: IfMatch = None) -> Any:
    op = _write_op(request, "delete", collection, id, if_match)
    return await _write_one(request, op)
