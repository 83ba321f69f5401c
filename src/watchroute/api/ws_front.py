"""WebSocket watches, answered in front of the framework's routing.

A WebSocket watch keeps the application's call for its connection on the stack as long as the
socket is open, idle or not. Through the framework's router that call holds the routing's own
frames (exit stacks, copies of the scope) for hours, per watcher. This front hands the upgrade
straight to the handlers in `ws.py`, the same ones the routes call (the routes stay, and
document the endpoints). It sits inside the security middleware, as the HTTP watch front does:
identity, grants and limits apply unchanged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from watchroute.api.ws import watch_many, watch_one
from watchroute.security.middleware import route_path


class WebSocketWatchFront:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        # /v1/_watch, /v1/{collection}, /v1/{collection}/{id}, matched as the routes match them.
        parts = route_path(scope).split("/")
        if len(parts) not in (3, 4) or parts[:2] != ["", "v1"] or not all(parts[2:]):
            await self.app(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        if parts[2:] == ["_watch"]:
            await watch_many(websocket)
        else:
            await watch_one(websocket, parts[2], parts[3] if len(parts) == 4 else None)
