"""The server's one layer: every request and WebSocket upgrade passes it, once.

In order: a response's head held to go out with its body (server/uvicorn.py) and the
server's own `send` handed to streaming watches (transports/stream.py); the security door
(security/middleware.py: Host allow-list, rate limits, the caller's identity, browser checks);
then the route table (table.py) answers its routes itself, and anything else goes to the
framework's app (system routes, the dashboard, the documents). Every HTTP response is counted by
method, route template and status (http_counts.py).

One layer, because each ASGI middleware wraps the request in a coroutine of its own (and most
wrap `send` in another): a single write is short enough that the layers in front of it cost
about as much as its own work. An exception in a route of the table goes to the server, which
answers 500 when nothing was sent yet, as the framework's error middleware would.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from watchroute.core.problems import Problem
from watchroute.http.problems import problem_response
from watchroute.http.table import WEBSOCKET, RouteTable
from watchroute.http_counts import HTTPCounts
from watchroute.security.middleware import SecurityDoor, route_path
from watchroute.server.uvicorn import hold_head
from watchroute.transports.stream import SERVER_SEND


class Door:
    def __init__(self, app: ASGIApp, table: RouteTable, security: SecurityDoor, http: HTTPCounts) -> None:
        self.app = app
        self.table = table
        self.security = security
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
            return
        if kind != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        scope[SERVER_SEND] = send
        held = hold_head(send)
        try:
            await self._http(scope, receive, send if held is not None else self.http.counting(scope, send))
        finally:
            if held is not None:
                held.release()
                if held.status:
                    self.http.count(scope, held.status)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        admitted = await self.security.admit(scope, receive, send)
        if admitted is None:
            return
        found = self.table.find(admitted["method"], route_path(admitted))
        if found is None:
            await self.app(admitted, receive, send)
            return
        if isinstance(found, list):
            allow = ", ".join(dict.fromkeys(found))
            problem = Problem(405, "MethodNotAllowed", "Method Not Allowed", headers={"Allow": allow})
            await problem_response(problem)(admitted, receive, send)
            return
        route, params = found
        admitted["path_params"] = params
        request = Request(admitted, receive)
        try:
            response = await route.endpoint(request, **params)
        except Problem as problem:
            response = problem_response(problem)
        assert response is not None
        # A watch's response runs as long as the watch: keep nothing else of the request alive.
        del request, found, route, params
        await response(admitted, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        admitted = await self.security.admit(scope, receive, send)
        if admitted is None:
            return
        found = self.table.find(WEBSOCKET, route_path(admitted))
        if found is None or isinstance(found, list):
            await self.app(admitted, receive, send)
            return
        route, params = found
        admitted["path_params"] = params
        await route.endpoint(WebSocket(admitted, receive, send), **params)
