"""WebSocket routes: an upgrade on a watch URL (`/v1/{c}`, `/v1/{c}/{id}`, with the query
parameters of the HTTP watch), and the multiplexed `/v1/_watch`.

Errors found before streaming cannot be an HTTP status a browser could read, so the socket is
accepted, gets one ERROR event and is closed with 4000 + status (see transports/websocket.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, WebSocket

from watchroute.api.resources import last_event_id, parse_filter
from watchroute.core.names import check_collection, check_id
from watchroute.core.problems import Problem, bad_request
from watchroute.core.revisions import parse_revision
from watchroute.runtime import Runtime
from watchroute.schemas import SCHEMAS
from watchroute.security.identity import identity_of
from watchroute.security.session import WatchSession
from watchroute.transports.websocket import Multiplexer, Outbox, serve_watch
from watchroute.watch import OpenedWatch, WatchSpec, check_format, open_watch

router = APIRouter(prefix="/v1")

DEFAULT_HEARTBEAT = 15.0


def _runtime(ws: WebSocket) -> Runtime:
    return ws.app.state.runtime


# -- parameters, from a query string or a subscribe message ----------------------------------


def _revision(name: str, value: Any) -> int | None:
    return None if value is None else parse_revision(value, name)


def _seconds(name: str, value: Any, low: float, high: float, default: float | None) -> float | None:
    if value is None:
        return default
    try:
        seconds = float(value)
        if isinstance(value, bool) or not low <= seconds <= high:
            raise ValueError
    except (TypeError, ValueError):
        raise bad_request(
            "BadParameter", f"{name} must be a number of seconds in {low:g}..{high:g}"
        ) from None
    return seconds


def _bool(name: str, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if value in ("true", "1", "false", "0"):
        return value in ("true", "1")
    raise bad_request("BadParameter", f"{name} must be true or false")


def _optional_str(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise bad_request("BadParameter", f"{name} must be a string")


async def _open(
    runtime: Runtime, collection: Any, id: Any, since: int | None, params: dict[str, Any], identity: Any
) -> tuple[OpenedWatch, float]:
    if not isinstance(collection, str):
        raise bad_request("BadParameter", "collection must be a string")
    if collection != SCHEMAS:  # the one reserved name that is watched like a collection
        check_collection(collection)
    if id is not None:
        check_id(id)
    filter_text = _optional_str("filter", params.get("filter"))
    if filter_text is not None and len(filter_text) > 4096:
        raise bad_request("BadParameter", "filter may be at most 4096 characters")
    flt = parse_filter(filter_text, runtime.settings.max_filter_length, runtime.settings.max_filter_clauses)
    initial = _bool("initial", params.get("initial"))
    heartbeat = _seconds("heartbeat", params.get("heartbeat"), 1, 300, DEFAULT_HEARTBEAT)
    assert heartbeat is not None
    spec = WatchSpec(
        collection,
        id,
        since,
        flt,
        initial,
        format=check_format(params.get("format")),
        conflate=_bool("conflate", params.get("conflate")),
        identity=identity,
        transport="websocket",
    )
    opened = await open_watch(runtime, spec)
    return opened, heartbeat


# -- routes (answered by ws_front.py ahead of the routing; declared here for the documents) ----


@router.websocket("/_watch")
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
        since = _revision("since", op.get("since"))
        opened, heartbeat = await _open(
            runtime, op.get("collection"), op.get("id"), since, op, session.identity
        )
        session.track(op.get("sub"), opened.watcher)
        return opened, heartbeat

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


@router.websocket("/{collection}")
async def watch_collection(websocket: WebSocket, collection: str) -> None:
    await watch_one(websocket, collection, None)


@router.websocket("/{collection}/{id}")
async def watch_resource(websocket: WebSocket, collection: str, id: str) -> None:
    await watch_one(websocket, collection, id)


async def watch_one(websocket: WebSocket, collection: str, id: str | None) -> None:
    runtime = _runtime(websocket)
    await websocket.accept()
    params = websocket.query_params
    try:
        # Last-Event-ID means what it means for SSE (and wins over `since`), for clients that
        # can set headers on the upgrade.
        resumed = last_event_id(websocket.headers.get("last-event-id"))
        since = resumed if resumed is not None else _revision("since", params.get("since"))
        timeout = _seconds("timeout", params.get("timeout"), 0.001, 86400, None)
        query = dict(params)
        if resumed is not None:
            query.pop("initial", None)
        opened, heartbeat = await _open(runtime, collection, id, since, query, identity_of(websocket))
    except Problem as problem:
        await Outbox(websocket).fail(problem)
        return
    await serve_watch(
        websocket,
        opened,
        heartbeat=heartbeat,
        timeout=timeout,
        max_events_per_write=runtime.settings.max_events_per_write,
    )
