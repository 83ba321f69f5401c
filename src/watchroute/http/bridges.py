"""`/v1/_bridges`: bridges to brokers and webhooks, set, read, removed (docs/bridges.md).

A bridge's configuration is the resource `_bridges/{name}`, written through the store like a
schema, so every instance runs the same bridges (bridges/manager.py). Its secrets (a webhook's
`secret`, a password in the URL) are the resource `_bridge_secrets/{name}`, written in the same
transaction: no route reads that collection, so neither a GET nor a watch of `_bridges` nor
the log's events of `_bridges` carry them. Every route needs the grant `bridges:{name}`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from watchroute.bridges.config import check_name, parse_config
from watchroute.bridges.manager import BRIDGES, SECRETS
from watchroute.core.problems import Problem, not_found
from watchroute.http import preconditions
from watchroute.http.bodies import read_json
from watchroute.http.models import PROBLEMS, WATCH_STREAMS, ListOrPoll, Written
from watchroute.http.resources import (
    IF_MATCH,
    IF_NONE_MATCH_WRITE,
    LIST_PARAMETERS,
    OBJECT_BODY,
    list_or_watch,
    runtime_of,
    written_response,
)
from watchroute.http.table import Route
from watchroute.security.identity import identity_of
from watchroute.store import WriteOp
from watchroute.watch.params import parse_watch_params

LIST_PAGE = 1000


def _authorize(request: Request, name: str) -> None:
    runtime_of(request).security.authorize(identity_of(request), "bridges", name)


async def _shown(request: Request, name: str, data: dict[str, Any], revision: int) -> dict[str, Any]:
    manager = runtime_of(request).bridges
    return {"name": name, "revision": revision, "config": data, "status": await manager.status(name)}


async def list_bridges(request: Request) -> Response:
    _authorize(request, "*")
    if parse_watch_params(request.query_params).watching:  # the configurations as stored: no secret
        return await list_or_watch(request, BRIDGES)
    store = runtime_of(request).store
    items: list[dict[str, Any]] = []
    after: str | None = None
    revision: int | None = None
    while True:
        page = await store.list(BRIDGES, None, LIST_PAGE, after)
        revision = page.revision if revision is None else revision
        items += [await _shown(request, row.id, row.data, row.revision) for row in page.rows]
        if page.next_after_id is None:
            break
        after = page.next_after_id
    return JSONResponse({"items": items, "revision": revision})


async def get_bridge(request: Request, name: str) -> Response:
    check_name(name)
    _authorize(request, name)
    row = await runtime_of(request).store.get(BRIDGES, name)
    if row is None:
        raise not_found(BRIDGES, name)
    return JSONResponse(
        await _shown(request, name, row.data, row.revision),
        headers={"ETag": preconditions.etag(row.revision)},
    )


async def get_deliveries(request: Request, name: str) -> Response:
    check_name(name)
    _authorize(request, name)
    runtime = runtime_of(request)
    if await runtime.store.get(BRIDGES, name) is None:
        raise not_found(BRIDGES, name)
    status = await runtime.bridges.status(name)
    return JSONResponse({"name": name, "deliveries": status.get("deliveries", [])})


async def put_bridge(request: Request, name: str) -> Response:
    check_name(name)
    _authorize(request, name)
    pre = preconditions.parse(request.headers.get("if-match"), request.headers.get("if-none-match"))
    runtime = runtime_of(request)
    config = parse_config(await read_json(request, runtime.settings.max_body_bytes))
    op = WriteOp(
        "put",
        BRIDGES,
        name,
        config.public(),
        if_match=pre.if_match,
        must_exist=pre.must_exist,
        must_not_exist=pre.must_not_exist,
    )
    ops = [op]
    secrets = config.secrets()
    if secrets is not None:
        ops.append(WriteOp("put", SECRETS, name, secrets))
    elif await runtime.store.get(SECRETS, name) is not None:
        ops.append(WriteOp("delete", SECRETS, name))
    changes = await runtime.store.write(ops)
    await runtime.bridges.refresh(name)  # this instance at once; the others within a moment
    return written_response(request, op, changes[0])


async def delete_bridge(request: Request, name: str) -> Response:
    check_name(name)
    _authorize(request, name)
    pre = preconditions.parse(request.headers.get("if-match"), None)
    runtime = runtime_of(request)
    op = WriteOp("delete", BRIDGES, name, if_match=pre.if_match, must_exist=pre.must_exist)
    ops = [op]
    if await runtime.store.get(SECRETS, name) is not None:
        ops.append(WriteOp("delete", SECRETS, name))
    try:
        changes = await runtime.store.write(ops)
    except Problem as problem:
        if problem.status == 404:
            raise not_found(BRIDGES, name) from None
        raise
    await runtime.bridges.refresh(name)
    return written_response(request, op, changes[0])


TAGS = ("bridges",)
ROUTES = [
    Route(
        "GET",
        "/v1/_bridges",
        list_bridges,
        "List the bridges with their status (state, position, lag, errors), or watch them",
        TAGS,
        response_model=ListOrPoll,
        responses={**PROBLEMS, **WATCH_STREAMS},
        parameters=LIST_PARAMETERS,
    ),
    Route(
        "GET",
        "/v1/_bridges/{name}",
        get_bridge,
        "Read a bridge's configuration and status",
        TAGS,
        responses=PROBLEMS,
    ),
    Route(
        "GET",
        "/v1/_bridges/{name}/deliveries",
        get_deliveries,
        "A bridge's latest deliveries (webhooks): revision, status, time taken, error",
        TAGS,
        responses=PROBLEMS,
    ),
    Route(
        "PUT",
        "/v1/_bridges/{name}",
        put_bridge,
        "Set a bridge: its runner (re)starts on one instance",
        TAGS,
        response_model=Written,
        responses=PROBLEMS,
        parameters=[IF_MATCH, IF_NONE_MATCH_WRITE],
        request_body=OBJECT_BODY,
    ),
    Route(
        "DELETE",
        "/v1/_bridges/{name}",
        delete_bridge,
        "Remove a bridge; its runner stops",
        TAGS,
        response_model=Written,
        responses=PROBLEMS,
        parameters=[IF_MATCH],
    ),
]
