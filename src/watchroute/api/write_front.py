"""Single-resource writes, answered in front of the framework's routing.

A write's own work (names, preconditions, grant, body, the store's round trip) is a small part
of what routing, dependency solving and the exception middleware cost per request; at
thousands of writes a second those layers are most of the server's CPU. This front answers
`POST /v1/{c}`, `PUT`, `PATCH` and `DELETE /v1/{c}/{id}` by calling the route functions of
`resources.py` themselves, with the headers the routes declare, and turns their Problems into
the same problem details the app's handler does: one implementation, two ways in. The routes
still document the writes in OpenAPI. It sits inside the security middleware: identity,
grants, rules and limits apply unchanged.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from watchroute.api import resources
from watchroute.api.problems import problem_response
from watchroute.core.problems import Problem
from watchroute.security.middleware import RequestHeaders, route_path

ITEM_WRITES = frozenset({"PUT", "PATCH", "DELETE"})


class WriteFront:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method != "POST" and method not in ITEM_WRITES:
            await self.app(scope, receive, send)
            return
        parts = route_path(scope).split("/")
        # ["", "v1", collection] or ["", "v1", collection, id]; reserved names ("_batch", ...)
        # and every other shape go to the routes.
        if (
            not ((len(parts) == 4 and method in ITEM_WRITES) or (len(parts) == 3 and method == "POST"))
            or parts[1] != "v1"
            or not all(parts[2:])
            or parts[2][0] == "_"
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        headers = RequestHeaders(scope)  # the headers the routes declare, as FastAPI reads them
        try:
            if method == "PUT":
                response = await resources.put_resource(
                    request, parts[2], parts[3], headers.get("if-match"), headers.get("if-none-match")
                )
            elif method == "POST":
                response = await resources.create_resource(request, parts[2])
            elif method == "PATCH":
                response = await resources.patch_resource(
                    request, parts[2], parts[3], headers.get("if-match")
                )
            else:
                response = await resources.delete_resource(
                    request, parts[2], parts[3], headers.get("if-match")
                )
        except Problem as problem:
            response = problem_response(problem)
        await response(scope, receive, send)
