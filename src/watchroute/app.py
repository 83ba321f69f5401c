"""The ASGI application: `create_app(settings)` for `watchroute serve` or for mounting inside
another FastAPI or Starlette application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from watchroute import __version__
from watchroute.core.problems import Problem, invalid_parameters
from watchroute.http import demo_pages, docs, schema_documents, system, ui
from watchroute.http.door import Door
from watchroute.http.models import BatchOp, BatchRequest
from watchroute.http.problems import problem_response
from watchroute.http.routes import route_table
from watchroute.http.table import RouteTable
from watchroute.runtime import Runtime
from watchroute.security.install import install as install_security
from watchroute.security.install import with_cors
from watchroute.security.middleware import SecurityDoor
from watchroute.settings import Settings


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
        # /docs is served whole by this server (http/docs.py); FastAPI's pages load a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI asks OpenTelemetry's global providers on every request whether to trace it
        # (environment lookups included), a measurable share of a single write's CPU
        # (docs/benchmarks.md, *Measurements behind the code*).
        # watchroute configures no OpenTelemetry; /metrics is its instrumentation.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.include_router(system.router)
    app.include_router(ui.router)
    app.include_router(docs.router)
    app.include_router(demo_pages.router)
    table = route_table()
    routers = (system.router, ui.router, docs.router)
    runtime.http.learn(
        [
            app.openapi_url or "",
            *(r.path for router in routers for r in router.routes if isinstance(r, Route)),
            *table.templates(),
        ]
    )
    _install_problem_handlers(app)
    _document_route_table(app, table)
    _document_collection_schemas(app, runtime)
    install_security(app, runtime.security)
    _put_door_in_front(app, table, runtime)
    return app


def _put_door_in_front(app: FastAPI, table: RouteTable, runtime: Runtime) -> None:
    """Every request passes one layer (http/door.py) before the framework's own stack, which
    then serves only what the route table does not have (system routes, dashboard, documents)."""
    build = app.build_middleware_stack

    def build_stack() -> ASGIApp:
        door = Door(build(), table, SecurityDoor(runtime.security), runtime.http)
        return with_cors(door, runtime.security)

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]


def _install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(_: Request, exc: Problem) -> Response:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        return problem_response(invalid_parameters(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        headers = dict(exc.headers or {})  # a Mapping here; the Problem keeps a dict of its own
        return problem_response(Problem(exc.status_code, reason, str(exc.detail), headers=headers))


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


def _document_route_table(app: FastAPI, table: RouteTable) -> None:
    """The OpenAPI document of the app's own routes and the route table's, with the models of
    the batch body (read by hand, for speed and precise errors)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=[*app.routes, *table.api_routes()],
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["BatchOp"] = BatchOp.model_json_schema()
            components["BatchRequest"] = BatchRequest.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components["BatchRequest"].pop("$defs", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
