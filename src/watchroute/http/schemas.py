"""`/v1/_schemas`: a collection's JSON Schema, set, read, removed and watched.

A schema is the resource `_schemas/{collection}` (schemas.py), so reading, listing and watching
it are the routes every collection has, under the reserved name. Setting one is the one write
that takes more than a store round trip: the collection's documents are checked first, while
every new write to the collection already answers to the schema (see `put_schema`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from watchroute.core.names import check_collection
from watchroute.core.problems import Problem
from watchroute.http import preconditions
from watchroute.http.bodies import read_object
from watchroute.http.models import PROBLEMS, WATCH_STREAMS, ListOrPoll, ResourceOrPoll, Written
from watchroute.http.resources import (
    IF_MATCH,
    IF_NONE_MATCH_WRITE,
    LIST_PARAMETERS,
    OBJECT_BODY,
    READ_PARAMETERS,
    get_or_watch,
    list_or_watch,
    runtime_of,
    written_response,
)
from watchroute.http.table import Route
from watchroute.runtime import Runtime
from watchroute.schemas import MAX_OFFENDERS, SCHEMAS, compile_schema, errors_of
from watchroute.security.identity import identity_of
from watchroute.store import WriteOp

CHECK_PAGE = 1000  # documents read per page while a new schema is checked
ERRORS_PER_OFFENDER = 3


async def list_or_watch_schemas(request: Request) -> Response:
    return await list_or_watch(request, SCHEMAS)


async def get_or_watch_schema(request: Request, collection: str) -> Response:
    check_collection(collection)
    return await get_or_watch(request, SCHEMAS, collection)


async def put_schema(request: Request, collection: str) -> Response:
    headers = request.headers
    op = _schema_op(request, "put", collection, headers.get("if-match"), headers.get("if-none-match"))
    runtime = runtime_of(request)
    op.data = await read_object(request, runtime.settings.max_body_bytes)
    validator = compile_schema(op.data)
    book = runtime.schemas
    async with book.setting(collection):
        # From here every write to the collection answers to the new schema as well. Writes
        # applied before may not have: the empty write commits after all of them, so the
        # documents read next include theirs. Nothing can then slip between the check and the
        # schema taking force.
        with book.tightened(collection, validator):
            await runtime.store.write([])
            await _check_documents(runtime, collection, validator)
            [change] = await runtime.store.write([op])
            book.saw(change)  # before the pending schema goes: it is in force without a gap
    return written_response(request, op, change)


async def delete_schema(request: Request, collection: str) -> Response:
    op = _schema_op(request, "delete", collection, request.headers.get("if-match"), None)
    runtime = runtime_of(request)
    async with runtime.schemas.setting(collection):
        [change] = await runtime.store.write([op])
        # Writes applied until now answered to the schema still: stricter, never looser.
        runtime.schemas.saw(change)
    return written_response(request, op, change)


def _schema_op(
    request: Request, kind: str, collection: str, if_match: str | None, if_none_match: str | None
) -> WriteOp:
    """The write of `_schemas/{collection}`, its name, preconditions and grant checked first."""
    check_collection(collection)
    pre = preconditions.parse(if_match, if_none_match)
    # `schema:{collection}`: who may decide what every writer of the collection may write.
    runtime_of(request).security.authorize(identity_of(request), "schema", collection)
    return WriteOp(
        kind,
        SCHEMAS,
        collection,
        if_match=pre.if_match,
        must_exist=pre.must_exist,
        must_not_exist=pre.must_not_exist,
    )


async def _check_documents(runtime: Runtime, collection: str, validator: Any) -> None:
    """409 when documents of `collection` do not match (the first few, with why), or when it
    holds more documents than `schema_check_max_documents`."""
    most = runtime.settings.schema_check_max_documents
    offenders: list[dict[str, Any]] = []
    seen = 0
    after: str | None = None
    while True:
        page = await runtime.store.list(collection, None, CHECK_PAGE, after)
        seen += len(page.rows)
        if seen > most:
            raise Problem(
                409,
                "TooManyToCheck",
                f"{collection} holds more than {most} documents, the most a new schema is checked "
                "against (schema_check_max_documents); nothing was changed",
            )
        for row in page.rows:
            if not validator.is_valid(row.data):
                errors = errors_of(validator, row.data)[:ERRORS_PER_OFFENDER]
                offenders.append({"id": row.id, "errors": errors})
                if len(offenders) == MAX_OFFENDERS:
                    break
        if len(offenders) == MAX_OFFENDERS or page.next_after_id is None:
            break
        after = page.next_after_id
    if offenders:
        more = " (the first few)" if len(offenders) == MAX_OFFENDERS else ""
        raise Problem(
            409,
            "SchemaConflict",
            f"{len(offenders)} document(s) of {collection}{more} do not match the schema; fix or "
            "remove them first, nothing was changed",
            offenders=offenders,
        )


TAGS = ("schemas",)
WATCHABLE = {**PROBLEMS, **WATCH_STREAMS}
ROUTES = [
    Route(
        "GET",
        "/v1/_schemas",
        list_or_watch_schemas,
        "List the collections' schemas, or watch them",
        TAGS,
        response_model=ListOrPoll,
        responses=WATCHABLE,
        parameters=LIST_PARAMETERS,
    ),
    Route(
        "GET",
        "/v1/_schemas/{collection}",
        get_or_watch_schema,
        "Read a collection's schema, or watch it",
        TAGS,
        response_model=ResourceOrPoll,
        responses=WATCHABLE,
        parameters=READ_PARAMETERS,
    ),
    Route(
        "PUT",
        "/v1/_schemas/{collection}",
        put_schema,
        "Set a collection's schema (JSON Schema 2020-12); its documents must match it",
        TAGS,
        response_model=Written,
        responses={**PROBLEMS, 409: PROBLEMS[422]},
        parameters=[IF_MATCH, IF_NONE_MATCH_WRITE],
        request_body=OBJECT_BODY,
    ),
    Route(
        "DELETE",
        "/v1/_schemas/{collection}",
        delete_schema,
        "Remove a collection's schema; answers its last state",
        TAGS,
        response_model=Written,
        responses=PROBLEMS,
        parameters=[IF_MATCH],
    ),
]
