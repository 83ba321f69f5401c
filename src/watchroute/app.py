"""The ASGI application: `create_app(settings)` for `watchroute serve` or for mounting inside
another FastAPI or Starlette application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from watchroute import __version__
from watchroute.api import (
    batch,
    bridges,
    demo_pages,
    docs,
    resources,
    schema_documents,
    schemas,
    system,
    ui,
    ws,
)
from watchroute.api.models import BatchOp, BatchRequest
from watchroute.api.watch_front import StreamingWatchFront
from watchroute.api.write_front import WriteFront
from watchroute.api.ws_front import WebSocketWatchFront
from watchroute.http_counts import HTTPCounts
from watchroute.problems import Problem, invalid_parameters
from watchroute.runtime import Runtime
from watchroute.security.install import install as install_security
from watchroute.settings import Settings
from watchroute.transports.held_head import hold_head
from watchroute.transports.stream import SERVER_SEND


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="watchroute",
        version=__version__,
        description="REST resources with a watch route on every collection and resource.",
        lifespan=lifespan,
        # /docs is served whole by this server (api/docs.py); FastAPI's pages load a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI asks OpenTelemetry's global providers on every request whether to trace it
        # (environment lookups included): about 8 us a request, a tenth of a single write's CPU.
        # watchroute configures no OpenTelemetry; /metrics is its instrumentation.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.include_router(system.router)
    app.include_router(ui.router)
    app.include_router(docs.router)
    app.include_router(demo_pages.router)
    app.include_router(batch.router)
    app.include_router(ws.router)
    app.include_router(bridges.router)  # before `/v1/{collection}`, like schemas
    app.include_router(schemas.router)  # before `/v1/{collection}`, which refuses reserved names
    app.include_router(resources.router)
    routers = (
        system.router,
        ui.router,
        docs.router,
        batch.router,
        ws.router,
        bridges.router,
        resources.router,
    )
    runtime.http.learn([app.openapi_url or "", *(r.path for router in routers for r in router.routes)])
    _install_problem_handlers(app)
    _document_hand_read_bodies(app)
    _document_collection_schemas(app, runtime)
    # Added before security, so inside it: streaming watches see the caller's identity.
    app.add_middleware(StreamingWatchFront)
    app.add_middleware(WriteFront)  # the same, for single-resource writes
    app.add_middleware(WebSocketWatchFront)  # and for WebSocket watches
    install_security(app, runtime.security)
    _expose_server_send(app, runtime.http)
    return app


def _expose_server_send(app: FastAPI, http: HTTPCounts) -> None:
    """Hand streaming watches the server's own `send` for their body chunks, and have each
    response's head written together with its body (`transports/held_head.py`).

    Every middleware layer wraps `send` in a coroutine of its own, and a watch stream sends a
    body chunk per commit to every caught-up watcher: on that path the layers cost about a tenth
    of the CPU of a delivery. They only look at the response's start message, which still goes
    through them (`transports/stream.py`).

    Every HTTP response is counted here, by route template and the status its head was
    written with (`http_counts.py`).
    """
    build = app.build_middleware_stack

    def build_stack() -> Any:
        stack = build()

        async def outermost(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await stack(scope, receive, send)
                return
            scope[SERVER_SEND] = send
            held = hold_head(send)
            try:
                await stack(scope, receive, send if held is not None else http.counting(scope, send))
            finally:
                if held is not None:
                    held.release()
                    if held.status:
                        http.count(scope, held.status)

        return outermost

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]


def _install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(_: Request, exc: Problem) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        return invalid_parameters(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return Problem(exc.status_code, reason, str(exc.detail), headers=exc.headers).response()


def _document_collection_schemas(app: FastAPI, runtime: Runtime) -> None:
    """The OpenAPI document with the collections' schemas as they are now: made again only
    when a schema has changed since it was last asked for."""
    build = app.openapi
    made: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        book = runtime.schemas
        if made.get("version") != book.version:
            made["document"] = schema_documents.openapi(build(), book.documents())
            made["version"] = book.version
        return made["document"]

    app.openapi = openapi  # type: ignore[method-assign]


def _document_hand_read_bodies(app: FastAPI) -> None:
    """Bodies read by hand (for speed and precise errors) still belong in the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["BatchOp"] = BatchOp.model_json_schema()
            components["BatchRequest"] = BatchRequest.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components["BatchRequest"].pop("$defs", None)
            object_body = {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
            paths = schema["paths"]
            paths["/v1/{collection}"]["post"]["requestBody"] = object_body
            paths["/v1/{collection}/{id}"]["put"]["requestBody"] = object_body
            paths["/v1/{collection}/{id}"]["patch"]["requestBody"] = {
                "required": True,
                "content": {
                    "application/merge-patch+json": {"schema": {"type": "object"}},
                    "application/json-patch+json": {"schema": {"type": "array"}},
                },
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
