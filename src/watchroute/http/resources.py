"""REST routes of a collection and its resources, and the watch route on the same URLs: the
endpoints and their entries in the route table (table.py)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from watchroute.capture import captured_collection
from watchroute.compression import compressed
from watchroute.core.change import Change
from watchroute.core.filter import Filter, FilterError, compile_filter
from watchroute.core.names import check_collection, check_id, new_id
from watchroute.core.problems import bad_request, future_revision, not_found
from watchroute.core.revisions import parse_revision
from watchroute.http import preconditions
from watchroute.http.bodies import read_json, read_object
from watchroute.http.models import PROBLEMS, WATCH_STREAMS, ListOrPoll, ResourceOrPoll, Written
from watchroute.http.pages import LIST_PARAMS, decode_continue, encode_continue
from watchroute.http.table import Route
from watchroute.leases import parse_ttl
from watchroute.runtime import Runtime
from watchroute.security.identity import identity_of
from watchroute.security.middleware import RequestHeaders
from watchroute.security.rules import restrict
from watchroute.store import Row, WriteOp
from watchroute.transports.longpoll import poll
from watchroute.transports.stream import WatchStream
from watchroute.watch.open import WatchSpec, open_watch
from watchroute.watch.params import (
    FILTER_MAX_LENGTH,
    WatchParams,
    openapi_parameters,
    parse_params,
    parse_watch_params,
    query_parameters,
)
from watchroute.wire.events import resource_json
from watchroute.wire.ndjson import NDJSONFraming
from watchroute.wire.patches import JSON_PATCH, for_media_type, reads_document
from watchroute.wire.sse import SSEFraming

LONGPOLL_DEFAULT_TIMEOUT = 30.0
LONGPOLL_MAX_TIMEOUT = 300.0


def runtime_of(request: Request) -> Runtime:
    return request.scope["app"].state.runtime


def resource_response(row_json: bytes, revision: int, status: int = 200, **headers: str) -> Response:
    return Response(
        row_json,
        status_code=status,
        media_type="application/json",
        headers={"ETag": preconditions.etag(revision), **headers},
    )


def parse_filter(
    text: str | None, max_length: int = FILTER_MAX_LENGTH, max_clauses: int = 64
) -> Filter | None:
    if text is None or text == "":
        return None
    try:
        return compile_filter(text, max_length=max_length, max_clauses=max_clauses)
    except FilterError as exc:
        raise bad_request("BadFilter", f"bad filter: {exc}", position=exc.position) from None


def last_event_id(value: str | None) -> int | None:
    if value is None:
        return None
    return parse_revision(value.strip(), "Last-Event-ID")


def header(name: str, description: str) -> dict[str, Any]:
    """A request header an endpoint reads itself, for the OpenAPI document."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


IF_MATCH = header("If-Match", '"<revision>" or *')
IF_NONE_MATCH_WRITE = header("If-None-Match", "* to create only")
IF_NONE_MATCH_READ = header("If-None-Match", "The ETag of the state held: 304 when nothing changed.")
TTL = {
    "name": "ttl",
    "in": "query",
    "required": False,
    "schema": {"type": "number", "minimum": 1},
    "description": "Seconds until the resource expires and is deleted (a lease; at most "
    "max_ttl_seconds). Without it the resource is permanent.",
}
OBJECT_BODY = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
PATCH_BODY = {
    "required": True,
    "content": {
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/json-patch+json": {"schema": {"type": "array"}},
    },
}
# A list, a read and their watches: what the OpenAPI document says they take.
LIST_PARAMETERS = [*openapi_parameters(), *query_parameters(LIST_PARAMS), IF_NONE_MATCH_READ]
READ_PARAMETERS = [*openapi_parameters(), IF_NONE_MATCH_READ]


async def _watch(
    request: Request, collection: str, id: str | None, q: WatchParams, flt: Filter | None
) -> Response:
    runtime = runtime_of(request)
    resumed = last_event_id(request.headers.get("last-event-id"))
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
        opened = await open_watch(runtime.watches, spec)
        answer = await poll(opened, wait, settings.max_events_per_write)
        return await compressed(request, answer, settings.compress_min_bytes)
    framing = (
        SSEFraming(settings.sse_retry_ms, q.patches)
        if "text/event-stream" in request.headers.get("accept", "")
        else NDJSONFraming(q.patches)
    )
    spec.transport = "sse" if isinstance(framing, SSEFraming) else "ndjson"
    opened = await open_watch(runtime.watches, spec)
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
    runtime = runtime_of(request)
    if collection in runtime.captured:
        raise captured_collection(collection)
    pre = preconditions.parse(if_match, if_none_match)
    # Most writes have no query string: parsing an empty one is a few microseconds of a write's CPU.
    ttl = request.query_params.get("ttl") if request.scope["query_string"] else None
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


async def list_or_watch_collection(request: Request, collection: str) -> Response:
    check_collection(collection)
    return await list_or_watch(request, collection)


async def list_or_watch(request: Request, collection: str) -> Response:
    """A list of `collection` (whose name is checked), or a watch of it."""
    query = request.query_params
    q = parse_watch_params(query)
    # The list's parameters are checked on a watch too (and then the watch streams the same).
    page_params = parse_params(LIST_PARAMS, query)
    limit, continue_, revision = page_params.limit, page_params.continue_, page_params.revision
    if_none_match = request.headers.get("if-none-match")
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
        committed = await runtime.store.committed_revision()
        if revision > committed:
            raise future_revision(revision, committed)
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


async def get_or_watch_resource(request: Request, collection: str, id: str) -> Response:
    check_collection(collection)
    check_id(id)
    return await get_or_watch(request, collection, id)


async def get_or_watch(request: Request, collection: str, id: str) -> Response:
    """A resource of `collection` (name and id checked), or a watch of it."""
    q = parse_watch_params(request.query_params)
    if_none_match = request.headers.get("if-none-match")
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


async def create_resource(request: Request, collection: str) -> Response:
    op = _write_op(request, "create", collection, new_id(), None)
    op.data = await read_object(request, runtime_of(request).settings.max_body_bytes)
    return await _write_one(request, op)


async def put_resource(request: Request, collection: str, id: str) -> Response:
    headers = RequestHeaders(request.scope)
    op = _write_op(request, "put", collection, id, headers.get("if-match"), headers.get("if-none-match"))
    op.data = await read_object(request, runtime_of(request).settings.max_body_bytes)
    return await _write_one(request, op)


async def patch_resource(request: Request, collection: str, id: str) -> Response:
    headers = RequestHeaders(request.scope)
    op = _write_op(request, "patch", collection, id, headers.get("if-match"))
    media_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
    document = await read_json(request, runtime_of(request).settings.max_body_bytes)
    op.patch = for_media_type(media_type, document)
    if media_type == JSON_PATCH and reads_document(document):
        _read_rule(request, collection)  # a `test` op is a read: it takes the read grant
    return await _write_one(request, op)


async def delete_resource(request: Request, collection: str, id: str) -> Response:
    op = _write_op(request, "delete", collection, id, RequestHeaders(request.scope).get("if-match"))
    return await _write_one(request, op)


WATCHABLE = {**PROBLEMS, **WATCH_STREAMS}
ROUTES = [
    Route(
        "GET",
        "/v1/{collection}",
        list_or_watch_collection,
        "List a collection, or watch it",
        response_model=ListOrPoll,
        responses=WATCHABLE,
        parameters=LIST_PARAMETERS,
    ),
    Route(
        "POST",
        "/v1/{collection}",
        create_resource,
        "Create a resource with an assigned id",
        status_code=201,
        response_model=Written,
        responses=PROBLEMS,
        parameters=[TTL],
        request_body=OBJECT_BODY,
    ),
    Route(
        "GET",
        "/v1/{collection}/{id}",
        get_or_watch_resource,
        "Read a resource, or watch it",
        response_model=ResourceOrPoll,
        responses=WATCHABLE,
        parameters=READ_PARAMETERS,
    ),
    Route(
        "PUT",
        "/v1/{collection}/{id}",
        put_resource,
        "Create or replace a resource",
        response_model=Written,
        responses=PROBLEMS,
        parameters=[IF_MATCH, IF_NONE_MATCH_WRITE, TTL],
        request_body=OBJECT_BODY,
    ),
    Route(
        "PATCH",
        "/v1/{collection}/{id}",
        patch_resource,
        "Patch a resource (merge patch or JSON patch)",
        response_model=Written,
        responses=PROBLEMS,
        parameters=[IF_MATCH, TTL],
        request_body=PATCH_BODY,
    ),
    Route(
        "DELETE",
        "/v1/{collection}/{id}",
        delete_resource,
        "Delete a resource; answers its last state",
        response_model=Written,
        responses=PROBLEMS,
        parameters=[IF_MATCH],
    ),
]
