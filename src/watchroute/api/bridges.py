"""`/v1/_bridges`: bridges to brokers and webhooks, set, read, removed (docs/bridges.md).

A bridge's configuration is the resource `_bridges/{name}`, written through the store like a
schema, so every instance runs the same bridges (bridges/manager.py). Its secrets (a webhook's
`secret`, a password in the URL) are the resource `_bridge_secrets/{name}`, written in the same
transaction: no route reads that collection, so neither a GET nor a watch of `_bridges` nor
the log's events of `_bridges` carry them. Every route needs the grant `bridges:{name}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from starlette.responses import JSONResponse, Response

from watchroute.api import preconditions
from watchroute.api.bodies import read_json
from watchroute.api.models import PROBLEMS, WATCH_STREAMS, Written
from watchroute.api.resources import (
    IfMatch,
    IfNoneMatch,
    WatchQuery,
    list_or_watch,
    runtime_of,
    written_response,
)
from watchroute.bridges.config import check_name, parse_config
from watchroute.bridges.manager import BRIDGES, SECRETS
from watchroute.problems import Problem, not_found
from watchroute.security.identity import identity_of
from watchroute.store import WriteOp

router = APIRouter(prefix="/v1/_bridges", tags=["bridges"])


def _authorize(request: Request, name: str) -> None:
    runtime_of(request).security.authorize(identity_of(request), "bridges", name)


async def _shown(request: Request, name: str, data: dict[str, Any], revision: int) -> dict[str, Any]:
    manager = runtime_of(request).bridges
    return {"name": name, "revision": revision, "config": data, "status": await manager.status(name)}


@router.get(
    "",
    responses={**PROBLEMS, **WATCH_STREAMS},
    summary="List the bridges with their status (state, position, lag, errors), or watch them",
)
async def list_bridges(
    request: Request,
    q: Annotated[WatchQuery, Depends()],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Any:
    _authorize(request, "*")
    if q.watching:  # the configurations as stored: no secret is in them
        return await list_or_watch(request, BRIDGES, q, 1000, None, None, if_none_match)
    store = runtime_of(request).store
    items: list[dict[str, Any]] = []
    after: str | None = None
    revision: int | None = None
    while True:
        page = await store.list(BRIDGES, None, 1000, after)
        revision = page.revision if revision is None else revision
        items += [await _shown(request, row.id, row.data, row.revision) for row in page.rows]
        if page.next_after_id is None:
            break
        after = page.next_after_id
    return JSONResponse({"items": items, "revision": revision})


@router.get("/{name}", responses=PROBLEMS, summary="Read a bridge's configuration and status")
async def get_bridge(request: Request, name: str) -> Any:
    check_name(name)
    _authorize(request, name)
    row = await runtime_of(request).store.get(BRIDGES, name)
    if row is None:
        raise not_found(BRIDGES, name)
    return JSONResponse(
        await _shown(request, name, row.data, row.revision),
        headers={"ETag": preconditions.etag(row.revision)},
    )


@router.get(
    "/{name}/deliveries",
    responses=PROBLEMS,
    summary="A bridge's latest deliveries (webhooks): revision, status, time taken, error",
)
async def get_deliveries(request: Request, name: str) -> Any:
    check_name(name)
    _authorize(request, name)
    runtime = runtime_of(request)
    if await runtime.store.get(BRIDGES, name) is None:
        raise not_found(BRIDGES, name)
    status = await runtime.bridges.status(name)
    return JSONResponse({"name": name, "deliveries": status.get("deliveries", [])})


@router.put(
    "/{name}",
    response_model=Written,
    responses=PROBLEMS,
    summary="Set a bridge: its runner (re)starts on one instance",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    },
)
async def put_bridge(
    request: Request, name: str, if_match: IfMatch = None, if_none_match: IfNoneMatch = None
) -> Any:
    check_name(name)
    _authorize(request, name)
    pre = preconditions.parse(if_match, if_none_match)
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


@router.delete(
    "/{name}", response_model=Written, responses=PROBLEMS, summary="Remove a bridge; its runner stops"
)
async def delete_bridge(request: Request, name: str, if_match: IfMatch = None) -> Response:
    check_name(name)
    _authorize(request, name)
    pre = preconditions.parse(if_match, None)
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
