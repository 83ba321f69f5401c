"""System routes: liveness, readiness, metrics, the AsyncAPI document and the list of collections."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from watchroute import metrics
from watchroute.core.problems import Problem
from watchroute.http import asyncapi, schema_documents
from watchroute.http.table import Route
from watchroute.security.identity import identity_of

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Ready to serve: the store answers, takes writes, and the tailer is current")
async def readyz(request: Request) -> Any:
    runtime = request.app.state.runtime
    try:
        why = await runtime.store.unavailable()
        if why is None:
            committed = await runtime.store.committed_revision()
    except Exception as exc:  # the store is unreachable: not ready, say why
        why = str(exc)
    if why is not None:
        # The same reason a write gets now: a balancer stops sending writes that would fail.
        unavailable = {"status": "unavailable", "reason": "StoreUnavailable", "detail": why}
        return JSONResponse(unavailable, status_code=503)
    lag = committed - runtime.tailer.revision
    status = 200 if lag <= 0 or await runtime.tailer.wait_for(committed, 1.0) else 503
    body: dict[str, Any] = {
        "status": "ok" if status == 200 else "behind",
        "revision": runtime.tailer.revision,
    }
    if runtime.capture is not None:  # the replication slot: its lag, whether it is lost
        body["capture"] = runtime.capture.status()
    return JSONResponse(body, status_code=status)


@router.get(
    "/metrics",
    summary="The instance's figures in the Prometheus text format",
    response_class=Response,
    responses={200: {"content": {metrics.MEDIA_TYPE: {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(request: Request) -> Response:
    body, media_type = await request.app.state.runtime.metrics.scrape(request.headers.get("accept"))
    return Response(body, media_type=media_type)


@router.get("/asyncapi.json", summary="The watch route as an AsyncAPI 3.0 document")
async def asyncapi_document(request: Request) -> dict[str, Any]:
    settings = request.app.state.runtime.settings
    host = request.headers.get("host") or f"{settings.host}:{settings.port}"
    document = asyncapi.document(host, secure=request.url.scheme == "https")
    return schema_documents.asyncapi(document, request.app.state.runtime.schemas.documents())


async def collections(request: Request) -> Response:
    runtime = request.app.state.runtime
    # Only the collections the caller may read; a count would tell how many documents a
    # per-document rule hides, so a rule-restricted collection is listed without one.
    items = []
    for item in await runtime.store.collections():
        try:
            rule = runtime.security.authorize(identity_of(request), "read", item["name"], audited=False)
        except Problem:
            continue
        items.append(item if rule is None else {"name": item["name"]})
    return Response(
        orjson.dumps({"items": items, "revision": runtime.tailer.revision}), media_type="application/json"
    )


ROUTES = [
    Route(
        "GET",
        "/v1/_collections",
        collections,
        "The collections and how many resources each holds",
        ("system",),
    )
]
