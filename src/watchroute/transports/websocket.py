"""WebSocket: one watch on an upgraded watch URL, or many subscriptions on `/v1/_watch`.

Every subscription is one watcher and one task, run the way `stream.py` runs a streaming watch:
while caught up, the hub pushes each commit's events straight to the socket; otherwise the task
reads everything that is ready and sends it (one event JSON per text message) before it waits
again. Nothing queues up per connection: while the socket will not take more, `send` waits and
the watchers' cursors stay where they are.

Close codes: 1000 when a watch's `timeout` passed, 1012 when the server is restarting (reconnect
and resume), 1009 for a frame over `ws_max_frame_bytes` (refused by the protocol layer), and
4000 + HTTP status after an ERROR that ends a single watch (4410 for Expired, 4400 for a bad
parameter), because a browser cannot read the status of a refused handshake but can read these.
A `/v1/_watch` connection closes with 4401 once its credential no longer stands, and with 4408
after `ws_idle_timeout` without a subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from watchroute.core.problems import Problem, bad_request
from watchroute.core.watcher import Watcher
from watchroute.transports.delivery import Delivery
from watchroute.watch.open import OpenedWatch
from watchroute.wire.events import error_json
from watchroute.wire.websocket import WSFraming, sub_prefix

log = logging.getLogger("watchroute")

CLOSE_TIMEOUT = 1000
CLOSE_RESTART = 1012
CLOSE_IDLE = 4408
MAX_SUB_LENGTH = 256
OPS = ("subscribe", "unsubscribe", "auth", "ping")

# A `/v1/_watch` subscribe message -> the opened watch and its heartbeat; raises Problem.
Opener = Callable[[dict[str, Any]], Awaitable[tuple[OpenedWatch, float]]]
# An `auth` message -> the answer to send (security/session.py); raises Problem (401).
Authenticator = Callable[[dict[str, Any]], Awaitable[bytes]]
# Before a subscribe: why the connection's credential no longer stands, or None.
CredentialCheck = Callable[[], Awaitable[Problem | None]]


def close_code(problem: Problem) -> int:
    return 4000 + problem.status


class Outbox:
    """The sending side of one socket. A lock keeps each batch of one subscription contiguous
    (and protects ASGI servers whose `send` may not be entered twice at once)."""

    __slots__ = ("_lock", "closed", "ws")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()
        self.closed = False

    async def send(self, *payloads: bytes) -> None:
        # Text messages, as the contract says; the bytes are UTF-8 JSON from orjson.
        async with self._lock:
            for payload in payloads:
                await self.ws.send_text(payload.decode())

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, RuntimeError, OSError):
            await self.ws.close(code, reason)

    async def fail(self, problem: Problem) -> None:
        """An ERROR that ends the socket's only watch, then the matching close code."""
        with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, RuntimeError, OSError):
            await self.send(error_json(problem.to_dict()))
        await self.close(close_code(problem), problem.reason)


def delivery(opened: OpenedWatch, outbox: Outbox, prefix: bytes) -> Delivery:
    async def write(frames: list[bytes]) -> None:
        await outbox.send(*frames)

    return Delivery(opened, WSFraming(prefix, opened.patches), write)


# -- a watch URL upgraded to a WebSocket -----------------------------------------------------


async def serve_watch(
    ws: WebSocket,
    opened: OpenedWatch,
    *,
    heartbeat: float,
    timeout: float | None,
    max_events_per_write: int,
) -> None:
    """Run one watch over an accepted WebSocket until the client leaves, `timeout` passes, the
    server shuts down, or the watcher falls behind the horizon."""
    outbox = Outbox(ws)
    watcher = opened.watcher
    with watcher:
        listener = asyncio.create_task(_listen_single(ws, outbox, watcher))
        try:
            await delivery(opened, outbox, b"{").run(
                heartbeat=heartbeat, timeout=timeout, max_events_per_write=max_events_per_write
            )
        except Problem as problem:
            await outbox.fail(problem)
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass
        else:
            if watcher.hub.closing:
                await outbox.close(CLOSE_RESTART, "server restarting")
            elif not watcher.closed:
                await outbox.close(CLOSE_TIMEOUT, "timeout")
        finally:
            listener.cancel()


async def _listen_single(ws: WebSocket, outbox: Outbox, watcher: Watcher) -> None:
    """A single watch needs nothing from its client; answer pings, notice the disconnect."""
    with contextlib.suppress(Exception):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is not None and '"ping"' in text:
                with contextlib.suppress(orjson.JSONDecodeError):
                    if orjson.loads(text) == {"op": "ping"}:
                        await outbox.send(b'{"type":"PONG"}')
    watcher.close()


# -- /v1/_watch: many subscriptions on one socket --------------------------------------------


class Multiplexer:
    """One `/v1/_watch` connection: reads ops, and runs one task per subscription.

    An ERROR with a top-level `sub` means that subscription has ended (or never started); an
    ERROR without one answers a message that ended nothing (malformed, unknown op, a duplicate
    or unknown `sub`, which is then named inside `error`). Neither closes the connection.
    A credential that no longer stands does: every subscription gets its ERROR, the connection
    one of its own, and the socket closes with 4000 + status (`end`).
    """

    def __init__(
        self,
        ws: WebSocket,
        open_subscription: Opener,
        *,
        max_subscriptions: int,
        max_message_bytes: int,
        idle_timeout: float,
        max_events_per_write: int,
        on_auth: Authenticator | None = None,
        check_credential: CredentialCheck | None = None,
    ) -> None:
        self.ws = ws
        self.on_auth = on_auth
        self.check_credential = check_credential
        self.outbox = Outbox(ws)
        self.open_subscription = open_subscription
        self.max_subscriptions = max_subscriptions
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_events_per_write = max_events_per_write
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        self._idle: asyncio.TimerHandle | None = None
        # When the connection last became without a live subscription (loop time; None: it has
        # one). Refused subscribes do not move it: they are not activity.
        self._idle_since: float | None = None
        self._closer: asyncio.Future[None] | None = None
        self._ending: Problem | None = None

    async def run(self) -> None:
        self._arm_idle()
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    await self._handle(self._parse(message))
                except Problem as problem:
                    await self.outbox.send(error_json(problem.to_dict()))
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass
        finally:
            if self._idle is not None:
                self._idle.cancel()
            tasks = list(self.subscriptions.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _parse(self, message: Mapping[str, Any]) -> dict[str, Any]:
        text = message.get("text")
        if text is None:
            raise bad_request("BadMessage", "send JSON text messages, not binary ones")
        # The protocol layer refuses bigger frames; this holds when mounted in another server.
        if len(text) > self.max_message_bytes:
            raise Problem(413, "TooLarge", f"a message may be at most {self.max_message_bytes} bytes")
        try:
            op = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise bad_request("BadMessage", f"the message is not JSON: {exc}") from None
        if not isinstance(op, dict):
            raise bad_request("BadMessage", 'a message must be a JSON object like {"op": "ping"}')
        if op.get("op") not in OPS:
            raise bad_request("UnknownOp", f"op must be one of {', '.join(OPS)}, not {op.get('op')!r:.60}")
        return op

    async def _handle(self, op: dict[str, Any]) -> None:
        if self._ending is not None:
            return  # the socket is closing: nothing more is answered
        kind = op["op"]
        if kind == "ping":
            await self.outbox.send(b'{"type":"PONG"}')
        elif kind == "auth":
            # A new credential for the connection; every subscription is checked again under it.
            answer = b'{"type":"AUTHENTICATED"}' if self.on_auth is None else await self.on_auth(op)
            await self.outbox.send(answer)
        elif kind == "subscribe":
            sub = _sub_of(op)
            # Before anything is read for it: a credential expired or revoked since the last
            # subscribe ends the connection, and this subscription gets nothing but its ERROR.
            lapsed = None if self.check_credential is None else await self.check_credential()
            if lapsed is not None:
                await self.end(lapsed, sub)
            if self._ending is not None:
                return
            if sub in self.subscriptions:
                raise Problem(409, "AlreadySubscribed", f"subscription {sub!r} is active", sub=sub)
            if len(self.subscriptions) >= self.max_subscriptions:
                problem = Problem(
                    429,
                    "TooManySubscriptions",
                    f"a connection may hold at most {self.max_subscriptions} subscriptions",
                )
                await self.outbox.send(sub_prefix(sub) + error_json(problem.to_dict())[1:])
                return
            task = asyncio.create_task(self._subscription(sub, op))
            self.subscriptions[sub] = task
            task.add_done_callback(functools.partial(self._ended, sub))
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
        else:  # unsubscribe
            sub = _sub_of(op)
            subscription = self.subscriptions.pop(sub, None)
            if subscription is None:
                raise Problem(404, "NotSubscribed", f"no active subscription {sub!r}", sub=sub)
            subscription.cancel()
            await asyncio.gather(subscription, return_exceptions=True)
            # Sent after the task has ended: no event of `sub` follows this message.
            await self.outbox.send(sub_prefix(sub) + b'"type":"UNSUBSCRIBED"}')
            self._arm_idle()

    async def _subscription(self, sub: str, op: dict[str, Any]) -> None:
        prefix = sub_prefix(sub)
        try:
            opened, heartbeat = await self.open_subscription(op)
            with opened.watcher:
                await self.outbox.send(
                    prefix + b'"type":"SUBSCRIBED","revision":%d}' % opened.initial_revision
                )
                self._idle_since = None
                await delivery(opened, self.outbox, prefix).run(
                    heartbeat=heartbeat, timeout=None, max_events_per_write=self.max_events_per_write
                )
                if opened.watcher.closed:
                    # Only a shutdown closes a subscription's watcher: the client reconnects.
                    await self.outbox.close(CLOSE_RESTART, "server restarting")
        except Problem as problem:
            if self._ending is not None:
                return  # `end` sends this subscription's ERROR
            # Ended from now on: an `end` starting while this ERROR goes out must not send another.
            self._ended(sub, asyncio.current_task())
            await self.outbox.send(prefix + error_json(problem.to_dict())[1:])
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass
        except Exception:
            log.exception("subscription %r failed", sub)
            failure = Problem(500, "Internal", "the subscription failed on the server")
            with contextlib.suppress(Exception):
                await self.outbox.send(prefix + error_json(failure.to_dict())[1:])

    def _ended(self, sub: str, task: asyncio.Task[None] | None) -> None:
        if self.subscriptions.get(sub) is task:
            del self.subscriptions[sub]
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self.subscriptions or not self.idle_timeout or self._idle is not None:
            return
        loop = asyncio.get_running_loop()
        if self._idle_since is None:
            self._idle_since = loop.time()
        self._idle = loop.call_at(self._idle_since + self.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        if not self.subscriptions:
            # Closing makes the server hand the receive loop a disconnect, which ends `run`.
            self._closer = asyncio.ensure_future(self.outbox.close(CLOSE_IDLE, "idle: no subscription"))

    # -- a credential that no longer stands ------------------------------------------------------

    def lapse(self, problem: Problem) -> None:
        """End the connection with `problem` (security/session.py calls this)."""
        if self._ending is None:
            self._closer = asyncio.ensure_future(self.end(problem))

    async def end(self, problem: Problem, sub: str | None = None) -> None:
        """The connection's credential no longer stands: every subscription still open ends with
        `problem` as its ERROR (and `sub`, a subscribe being refused, too), then the connection's
        own ERROR (without `sub`) says why, and the socket closes with 4000 + status."""
        if self._ending is not None:
            return
        self._ending = problem
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        # Stopped before the ERRORs go out, so that nothing of theirs follows them.
        ended = dict(self.subscriptions)
        self.subscriptions.clear()
        for task in ended.values():
            task.cancel()
        await asyncio.gather(*ended.values(), return_exceptions=True)
        error = error_json(problem.to_dict())
        subs = [*ended, *([sub] if sub is not None else [])]
        frames = [*(sub_prefix(s) + error[1:] for s in subs), error]
        with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, RuntimeError, OSError):
            await self.outbox.send(*frames)
        await self.outbox.close(close_code(problem), problem.reason)


def _sub_of(op: dict[str, Any]) -> str:
    sub = op.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUB_LENGTH:
        raise bad_request("BadMessage", f'{op["op"]} needs "sub": a string of 1..{MAX_SUB_LENGTH} characters')
    return sub
