"""WebSocket routes: an upgrade on a watch URL (`/v1/{c}`, `/v1/{c}/{id}`, with the query
parameters of the HTTP watch), and the multiplexed `/v1/_watch`.

Errors found before streaming cannot be an HTTP status a browser could read, so the socket is
accepted, gets one ERROR event and is closed with 4000 + status (see transports/websocket.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket

from watchroute.core.names import check_collection, check_id
from watchroute.core.problems import Problem, bad_request
from watchroute.http.resources import last_event_id, parse_filter
from watchroute.http.table import WEBSOCKET, Route
from watchroute.runtime import Runtime
from watchroute.schemas import SCHEMAS
from watchroute.security.identity import identity_of
from watchroute.security.session import WatchSession
from watchroute.transports.websocket import Multiplexer, Outbox, serve_watch
from watchroute.watch.open import OpenedWatch, WatchSpec, open_watch
from watchroute.watch.params import HTTP_ONLY, WatchParams, parse_watch_params


def _runtime(ws: WebSocket) -> Runtime:
    return ws.app.state.runtime


async def _open(
    runtime: Runtime, collection: Any, id: Any, params: WatchParams, identity: Any
) -> OpenedWatch:
    if not isinstance(collection, str):
        raise bad_request("BadParameter", "collection must be a string")
    if collection != SCHEMAS:  # the one reserved name that is watched like a collection
        check_collection(collection)
    if id is not None:
        if not isinstance(id, str):
            raise bad_request("BadParameter", "id must be a string")
        check_id(id)
    settings = runtime.settings
    spec = WatchSpec(
        collection,
        id,
        params.since,
        parse_filter(params.filter, settings.max_filter_length, settings.max_filter_clauses),
        params.initial,
        format=params.format,
        conflate=params.conflate,
        identity=identity,
        transport="websocket",
    )
    return await open_watch(runtime.watches, spec)


def _watch_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The watch parameters among a message's fields or an upgrade's query: a WebSocket watch
    is always a stream, so `watch` is not one of them."""
    return {k: v for k, v in values.items() if k not in HTTP_ONLY}


# -- endpoints ----------------------------------------------------------------------------


async def watch_many(websocket: WebSocket) -> None:
    """Many subscriptions on one socket: subscribe / unsubscribe / auth / ping."""
    runtime = _runtime(websocket)
    settings = runtime.settings
    await websocket.accept()
    # The connection's identity; {"op": "auth"} replaces it and checks every subscription again.
    client = websocket.client
    session = WatchSession(
        runtime.security, identity_of(websocket), client.host if client else None, settings.ws_auth_timeout
    )

    async def open_subscription(op: dict[str, Any]) -> tuple[OpenedWatch, float]:
        params = parse_watch_params(_watch_fields(op))
        opened = await _open(runtime, op.get("collection"), op.get("id"), params, session.identity)
        session.track(op.get("sub"), opened.watcher)
        return opened, params.heartbeat

    multiplexer = Multiplexer(
        websocket,
        open_subscription,
        max_subscriptions=settings.ws_max_subscriptions,
        max_message_bytes=settings.ws_max_frame_bytes,
        idle_timeout=settings.ws_idle_timeout,
        max_events_per_write=settings.max_events_per_write,
        on_auth=session.refresh,
        check_credential=session.lapsed,
    )
    # The credential is followed while the socket is open: its expiry, its revocation, or (for
    # a connection that came without one) the deadline to send one each end the connection.
    session.start(multiplexer.lapse)
    try:
        await multiplexer.run()
    finally:
        session.stop()


async def watch_collection(websocket: WebSocket, collection: str) -> None:
    await watch_one(websocket, collection, None)


async def watch_resource(websocket: WebSocket, collection: str, id: str) -> None:
    await watch_one(websocket, collection, id)


async def watch_one(websocket: WebSocket, collection: str, id: str | None) -> None:
    runtime = _runtime(websocket)
    await websocket.accept()
    try:
        params = parse_watch_params(_watch_fields(websocket.query_params))
        # Last-Event-ID means what it means for SSE (and wins over `since`), for clients that
        # can set headers on the upgrade.
        resumed = last_event_id(websocket.headers.get("last-event-id"))
        if resumed is not None:
            params.since, params.initial = resumed, False
        opened = await _open(runtime, collection, id, params, identity_of(websocket))
    except Problem as problem:
        await Outbox(websocket).fail(problem)
        return
    await serve_watch(
        websocket,
        opened,
        heartbeat=params.heartbeat,
        timeout=params.timeout,
        max_events_per_write=runtime.settings.max_events_per_write,
    )


ROUTES = [
    Route(WEBSOCKET, "/v1/_watch", watch_many),
    Route(WEBSOCKET, "/v1/{collection}", watch_collection),
    Route(WEBSOCKET, "/v1/{collection}/{id}", watch_resource),
]
