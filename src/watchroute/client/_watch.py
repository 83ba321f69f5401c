"""A watch that outlives its connections.

`revision` is the resume point: every change with a revision <= it has been handed to the
caller (or was not for this watch, as a BOOKMARK says). Whatever happens to a connection, the
next one asks for `since=revision`, so the caller sees each change once, in revision order, as
long as the server still has the history; a change at or below the resume point is never
handed out twice. When the history is gone (410) the watch raises `Expired`, or, with
`on_expired="relist"`, lists again through the watch itself (`initial=true`), marking the new
listing with a RESYNC event.

With `format="patch"` the server sends a MODIFIED as a merge patch; the watch keeps the last
state of every resource it has handed out and applies the patch to it, so that the caller gets
whole objects all the same (and the patch in `event.patch`). It needs the state at its start:
a watch from now lists it silently first (`initial=true`, not handed out); a watch from `since`
takes it as `states=` (e.g. the listing `since` came from). A patch for a resource the watch
does not hold lists again, as after a 410 with `on_expired="relist"`: RESYNC, then the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

import httpx
from websockets.exceptions import WebSocketException

from watchroute.client._transports import READERS, TRANSPORTS, Connection, Retry, Transport, resource_path
from watchroute.client.backoff import Backoff
from watchroute.client.errors import (
    APIError,
    ConnectionFailed,
    Expired,
    ProtocolError,
    ServerError,
    error_from_problem,
)
from watchroute.client.events import (
    ADDED,
    BOOKMARK,
    CHANGE_TYPES,
    DELETED,
    MODIFIED,
    RESYNC,
    Resource,
    WatchEvent,
)
from watchroute.watch.heartbeat import HEARTBEAT_DEFAULT, HEARTBEAT_MAX, HEARTBEAT_MIN
from watchroute.wire.mergepatch import merge

if TYPE_CHECKING:
    from watchroute.client._async import AsyncClient

log = logging.getLogger("watchroute.client")

OnExpired = Literal["raise", "relist"]
Format = Literal["full", "patch"]
# Network failures that end a connection, not the watch.
RETRIABLE = (Retry, ConnectionFailed, httpx.TransportError, OSError, WebSocketException, ServerError)


class WatchOptions(TypedDict, total=False):
    """The keyword arguments of `AsyncClient.watch` and `Client.watch`, passed on as they are to
    `AsyncWatch`: its signature has the defaults and its checks, so that they live once."""

    since: int | None
    filter: str | None
    initial: bool
    transport: Transport
    on_expired: OnExpired
    heartbeat: float
    backoff: Backoff | None
    format: Format
    conflate: bool
    states: Iterable[Resource] | None


class Phase(enum.Enum):
    """Where a watch is. Each connection starts in the phase the last one left.

    LISTING, RELISTING and FILLING list first (`initial=true`): every event until the bookmark
    that ends the listing is a state, not a change, and the states held for `format=patch` are
    rebuilt from it. They differ in what the caller hears: LISTING hands the states out as the
    initial events the caller asked for; RELISTING does the same after a RESYNC event, because
    the caller holds states from before (a listing cut short, history expired, a patch for an
    unknown state); FILLING hands out nothing, because it only fills the states a `format=patch`
    watch needs and the caller asked for changes only. FOLLOWING hands out changes after
    `revision`, and only those: an event at or before it was handed out already.
    """

    LISTING = "listing"
    RELISTING = "relisting"
    FILLING = "filling"
    FOLLOWING = "following"


LISTS_FIRST = (Phase.LISTING, Phase.RELISTING, Phase.FILLING)


class _Unpatchable(Exception):
    """A patch for a resource the watch does not hold: only a new listing can help."""


class AsyncWatch:
    """An async iterator of `WatchEvent`s; reconnects and resumes by itself until closed."""

    def __init__(
        self,
        client: AsyncClient,
        collection: str,
        id: str | None = None,
        *,
        since: int | None = None,
        filter: str | None = None,
        initial: bool = False,
        transport: Transport = "sse",
        on_expired: OnExpired = "raise",
        heartbeat: float = HEARTBEAT_DEFAULT,
        backoff: Backoff | None = None,
        format: Format = "full",
        conflate: bool = False,
        states: Iterable[Resource] | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if on_expired not in get_args(OnExpired):
            raise ValueError('on_expired must be "raise" or "relist"')
        if initial and since is not None:
            raise ValueError("initial=True lists the current state; it cannot start at since")
        if format not in get_args(Format):
            raise ValueError('format must be "full" or "patch"')
        if not HEARTBEAT_MIN <= heartbeat <= HEARTBEAT_MAX:
            bounds = f"{HEARTBEAT_MIN:g} to {HEARTBEAT_MAX:g}"
            raise ValueError(f"heartbeat must be {bounds} seconds (the server's bounds)")
        self.client = client
        self.collection = collection
        self.id = id
        self.filter = filter
        self.transport = transport
        self.on_expired = on_expired
        self.heartbeat = heartbeat
        self.backoff = backoff or Backoff()
        self.revision: int | None = since  # the resume point
        self.reconnects = 0  # connections lost and opened again
        self.server_retry = 0.0  # the SSE `retry:` the server asked for, in seconds
        self.phase = Phase.LISTING if initial else Phase.FOLLOWING
        self.format = format
        self.conflate = conflate
        # format="patch": the last state handed out per id, which the next patch applies to.
        self._states: dict[str, Resource] | None = None
        if format == "patch":
            self._states = {r.id: r for r in states or ()}
            if since is None and not initial:
                self.phase = Phase.FILLING
        self._events = self._run()

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def url(self) -> str:
        return resource_path(self.collection, self.id)

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"heartbeat": self.heartbeat}
        if self.filter:
            params["filter"] = self.filter
        if self.format != "full":
            params["format"] = self.format
        if self.conflate:
            params["conflate"] = "true"
        if self.phase in LISTS_FIRST:
            params["initial"] = "true"
        elif self.revision is not None:
            params["since"] = self.revision
        return params

    async def _run(self) -> AsyncGenerator[WatchEvent, None]:
        reader = READERS[self.transport]
        while True:
            hint = 0.0
            try:
                if self.revision is None and self.phase is Phase.FOLLOWING:
                    # Start from a known revision, so that a connection lost before its first
                    # event does not make the next one start later and skip changes.
                    self.revision = (await self.client.list(self.collection, limit=1)).revision
                if self.phase in LISTS_FIRST:
                    if self._states is not None:
                        self._states.clear()  # the listing is the whole state again
                    if self.phase is Phase.RELISTING:
                        yield WatchEvent(RESYNC, None)
                    elif self.phase is Phase.LISTING:
                        # Should this listing be cut short, the next one starts over.
                        self.phase = Phase.RELISTING
                connection = Connection(
                    http=self.client.http,
                    url=self.url,
                    params=self._params(),
                    heartbeat=self.heartbeat,
                    dead_after=self.heartbeat * 2 + 1,
                    connected=self._connected,
                    retry_hint=self._set_retry,
                    tls=self.client.tls_context,
                )
                # aclosing: when the caller stops iterating, the connection closes now, not
                # whenever the garbage collector finds the reader.
                async with contextlib.aclosing(reader(connection)) as raws:
                    async for raw in raws:
                        event = self._accept(raw)
                        if event is not None:
                            yield event
                why = "the server ended the stream"
            except Expired:
                if self.on_expired == "raise":
                    raise
                log.info("watch %s: history expired at %s; listing again", self.url, self.revision)
                if self.phase is not Phase.FILLING:  # the caller holds nothing from a fill
                    self.phase = Phase.RELISTING
                continue
            except _Unpatchable as exc:
                log.warning("watch %s: %s; listing again", self.url, exc)
                self.phase = Phase.RELISTING
                continue
            except RETRIABLE as exc:
                why = f"{type(exc).__name__}: {exc}"
                hint = exc.after if isinstance(exc, Retry) else getattr(exc, "retry_after", 0.0)
            except APIError as exc:
                # "Later" (429, 503...) from the listing that finds the start, or in an ERROR
                # event: retried like a refused connection, after at least its Retry-After.
                if not exc.retriable:
                    raise
                why = f"{type(exc).__name__}: {exc}"
                hint = exc.retry_after
            floor = max(hint, self.server_retry if self.transport == "sse" else 0.0)
            delay = self.backoff.next_delay(floor)
            self.reconnects += 1
            log.info("watch %s: %s; reconnecting in %.2fs from %s", self.url, why, delay, self.revision)
            await asyncio.sleep(delay)

    def _connected(self) -> None:
        if self.backoff.attempt:  # after a failure: say that it is over
            log.info("watch %s: connected again, from revision %s", self.url, self.revision)
        self.backoff.reset()

    def _set_retry(self, seconds: float) -> None:
        self.server_retry = seconds

    def _accept(self, raw: dict[str, Any]) -> WatchEvent | None:
        """The event to hand out for one server event, or None for one already handed out."""
        if not isinstance(raw, dict):
            raise ProtocolError(f"watch {self.url}: an event that is not an object: {str(raw)[:200]}")
        kind = raw.get("type")
        if kind == "ERROR":
            error = raw.get("error") or {}
            raise error_from_problem(error.get("status") if isinstance(error, dict) else None, error)
        if kind not in (BOOKMARK, *CHANGE_TYPES):
            log.warning("watch %s: ignoring an event of unknown type %r", self.url, kind)
            return None
        revision = raw.get("revision")
        if type(revision) is not int:
            raise ProtocolError(f"watch {self.url}: a {kind} event without a revision: {str(raw)[:200]}")
        if kind == BOOKMARK:
            if raw.get("initial_events_end"):
                filled, self.phase = self.phase is Phase.FILLING, Phase.FOLLOWING
                self.revision = revision
                if filled:
                    return None
                return WatchEvent(BOOKMARK, revision, initial_events_end=True, raw=raw)
            listing = self.phase in LISTS_FIRST
            if listing or (self.revision is not None and revision < self.revision):
                return None
            self.revision = revision
            return WatchEvent(BOOKMARK, revision, raw=raw)
        listing = self.phase in LISTS_FIRST
        if self.revision is not None and revision <= self.revision and not listing:
            return None  # already handed out by an earlier connection
        patch = raw.get("patch") if kind == MODIFIED and "object" not in raw else None
        if patch is not None:
            resource = self._patched(raw, revision, patch)
        else:
            try:
                resource = Resource.from_json(raw["object"])
            except (KeyError, TypeError) as exc:
                raise ProtocolError(
                    f"watch {self.url}: a {kind} event without a valid object: {str(raw)[:200]}"
                ) from exc
        if self._states is not None:
            if kind == DELETED and not listing:
                self._states.pop(resource.id, None)
            else:
                self._states[resource.id] = resource
        if listing:
            if self.phase is Phase.FILLING:
                return None
            return WatchEvent(ADDED, revision, resource, initial=True, raw=raw)
        self.revision = revision
        return WatchEvent(kind, revision, resource, patch=patch, raw=raw)

    def _patched(self, raw: dict[str, Any], revision: int, patch: Any) -> Resource:
        """The resource a MODIFIED patch makes of the state held for its id."""
        id = raw.get("id")
        if not isinstance(id, str) or not isinstance(patch, dict):
            raise ProtocolError(f"watch {self.url}: a patch event without id or patch: {str(raw)[:200]}")
        held = self._states.get(id) if self._states is not None else None
        if held is None:
            raise _Unpatchable(
                f"a patch at revision {revision} for {id!r}, whose state the watch does not hold"
            )
        return Resource(id, revision, held.created_revision, merge(held.data, patch))
