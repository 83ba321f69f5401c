"""The route table of `/v1`: one declaration per endpoint, which serves it and documents it.

Each `Route` names a method, a path template and a plain endpoint (`endpoint(request,
**path_parameters) -> Response`, or the same with a WebSocket), with what the OpenAPI document
says of it. The server's one layer (door.py) answers the requests of the table's routes
through `RouteTable.find`, ahead of the framework's routing, and `api_routes()` makes the same
declarations into FastAPI routes that are only ever read by the OpenAPI generator.

Why not FastAPI's own routing: a watch stream lives for hours and
everything a framework keeps on the stack for its request (routing, dependency solving, the
exception middleware's frames, copies of the scope) would stay allocated as long, per watcher;
and at thousands of single writes a second those layers were most of the server's CPU. Query
parameters and headers are read by the endpoints (`watch/params.py` for a watch), and given to
the document here, so nothing is declared twice.

Matching is by segments: a template is literal segments and `{parameter}` segments, each a
whole non-empty segment, tried in the table's order (the first route that matches wins, as in
Starlette). A path that a route matches with another method is 405 with `Allow`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from starlette.responses import Response

WEBSOCKET = "WEBSOCKET"

Endpoint = Callable[..., Awaitable[Response | None]]


@dataclass(slots=True)
class Route:
    method: str  # an HTTP method, or WEBSOCKET for an upgrade
    path: str  # "/v1/{collection}/{id}"
    endpoint: Endpoint
    summary: str = ""
    tags: Sequence[str] = ("resources",)
    status_code: int | None = None
    response_model: Any = None
    responses: dict[int | str, Any] = field(default_factory=dict)
    # Query parameters and headers the endpoint reads itself, as OpenAPI parameters.
    parameters: Sequence[dict[str, Any]] = ()
    request_body: dict[str, Any] | None = None
    # Literal segments (str) and parameter names (None at their place), made from `path`.
    segments: tuple[str | None, ...] = ()
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parts = self.path.split("/")[1:]
        self.segments = tuple(None if p.startswith("{") else p for p in parts)
        self.names = tuple(p[1:-1] for p in parts if p.startswith("{"))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """The path parameters, if `parts` (the path's segments) fit this route's template."""
        if len(parts) != len(self.segments):
            return None
        values = []
        for part, segment in zip(parts, self.segments, strict=True):
            if segment is None:
                if not part:
                    return None
                values.append(part)
            elif part != segment:
                return None
        return dict(zip(self.names, values, strict=True))

    def api_route(self) -> APIRoute:
        """This route for FastAPI's OpenAPI generator (never for serving): the path parameters
        from a signature of their names, the rest as declared."""
        names = self.names

        async def documented(**_: str) -> None:  # pragma: no cover - never called
            return None

        documented.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=str) for n in names]
        )
        extra: dict[str, Any] = {}
        if self.parameters:
            extra["parameters"] = list(self.parameters)
        if self.request_body is not None:
            extra["requestBody"] = self.request_body
        options: dict[str, Any] = {}
        if self.status_code is not None:
            options["status_code"] = self.status_code
        return APIRoute(
            self.path,
            documented,
            methods=[self.method],
            summary=self.summary,
            tags=list(self.tags),
            response_model=self.response_model,
            responses=self.responses,
            openapi_extra=extra or None,
            name=self.endpoint.__name__,
            **options,
        )


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        # By method and segment count: a request is compared only with the templates of its
        # own method and length, and with the others only when none of those has its path.
        self._by_method: dict[tuple[str, int], list[Route]] = {}
        self._by_length: dict[int, list[Route]] = {}
        for route in self.routes:
            self._by_method.setdefault((route.method, len(route.segments)), []).append(route)
            self._by_length.setdefault(len(route.segments), []).append(route)

    def templates(self) -> list[str]:
        return list(dict.fromkeys(r.path for r in self.routes))

    def api_routes(self) -> list[APIRoute]:
        return [r.api_route() for r in self.routes if r.method != WEBSOCKET]

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | list[str] | None:
        """The route for `method` on `path` with its parameters; else the methods the path
        takes (405), or None when no route has the path."""
        parts = path.split("/")[1:]
        for route in self._by_method.get((method, len(parts)), ()):
            params = route.match(parts)
            if params is not None:
                return route, params
        allowed = [
            r.method
            for r in self._by_length.get(len(parts), ())
            if r.method not in (method, WEBSOCKET) and r.match(parts) is not None
        ]
        return allowed or None
