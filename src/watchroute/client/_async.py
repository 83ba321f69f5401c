"""`AsyncClient`: the REST routes and the watch route of a watchroute server, for asyncio."""

from __future__ import annotations

import builtins
import os
import ssl
from typing import TYPE_CHECKING, Any, Unpack

import httpx
import orjson

from watchroute.client._transports import resource_path
from watchroute.client._watch import AsyncWatch, WatchOptions
from watchroute.client.errors import ConnectionFailed, error_from_body
from watchroute.client.events import BatchResult, Resource, ResourceList

if TYPE_CHECKING:
    from watchroute.client.live import LiveCollection

DEFAULT_URL = "http://127.0.0.1:8000"
# The server's largest page: listing everything takes as few round trips as it can.
MAX_PAGE = 10_000


def if_match_header(if_match: int | str | None) -> dict[str, str]:
    if if_match is None:
        return {}
    return {"If-Match": "*" if if_match == "*" else f'"{int(if_match)}"'}


class AsyncClient:
    """A client of one watchroute server.

    Reads and writes raise `APIError` subclasses (`NotFound`, `PreconditionFailed`, ...) for the
    server's problem details and `ConnectionFailed` when the server cannot be reached; they are
    not retried (a write may have committed). Watches retry by themselves.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """`headers` go with every request and every watch (WebSocket handshakes included);
        `verify` is httpx's: an `ssl.SSLContext` (e.g. trusting a private CA) or False, for
        HTTPS and WSS alike. With `http=`, a client of the caller's own, `timeout` and `headers`
        are that client's business, `verify` is for WSS only (give the same as to that client),
        and `aclose` leaves it open."""
        # Like the CLI: the URL given, else WATCHROUTE_URL, else the local default.
        self.url = (url or os.environ.get("WATCHROUTE_URL") or DEFAULT_URL).rstrip("/")
        self._owns_http = http is None
        # One TLS context for HTTPS and WSS, made here: an httpx client does not say which one
        # it uses, so a wss:// watch could not honour a caller's private CA otherwise.
        self._verify = verify
        self._tls: ssl.SSLContext | None = None if http else httpx.create_ssl_context(verify=verify)
        # No cap on connections: every open watch holds one.
        self.http = http or httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            headers=headers,
            verify=self._tls or verify,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context of wss:// watches: the one HTTPS uses, or with `http=`, one made
        from `verify` (on first use)."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context(verify=self._verify)
        return self._tls

    async def aclose(self) -> None:
        """Close the HTTP client if this client made it (not one passed as `http=`)."""
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the JSON it answers. A refusal raises the server's `APIError`, a network
        failure `ConnectionFailed`."""
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            # A timeout's text is empty: the fallback tests the text (an exception is always true).
            raise ConnectionFailed(f"{method} {self.url}{path}: {str(exc) or type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise error_from_body(response.status_code, response.content, response.headers)
        return orjson.loads(response.content)

    async def _resource(self, method: str, path: str, **kwargs: Any) -> Resource:
        """A request answered with one resource: every read or write of a single resource."""
        return Resource.from_json(await self._request(method, path, **kwargs))

    # -- reads -------------------------------------------------------------------------------

    async def get(self, collection: str, id: str) -> Resource:
        return await self._resource("GET", resource_path(collection, id))

    async def list(
        self,
        collection: str,
        *,
        filter: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
    ) -> ResourceList:
        """One page when `limit` is given (follow `continue_`), else every page of the listing.
        `limit` is sent as it is: one outside the server's 1..10000 is refused (`BadRequest`).

        Either way `revision` is the listing's revision: watching with `since=revision` misses
        nothing that changed while the pages were read."""
        params: dict[str, Any] = {"limit": MAX_PAGE if limit is None else limit}
        if filter:
            params["filter"] = filter
        items: list[Resource] = []
        while True:
            if continue_:
                params["continue"] = continue_
            page = await self._request("GET", resource_path(collection), params=params)
            items += [Resource.from_json(r) for r in page["items"]]
            continue_ = page["continue"]
            if limit is not None or not continue_:
                return ResourceList(items, page["revision"], continue_)

    # -- writes ------------------------------------------------------------------------------

    async def create(self, collection: str, data: dict[str, Any], *, ttl: float | None = None) -> Resource:
        """Create a resource with an id the server assigns. `ttl`: it is a lease, deleted that
        many seconds after the write unless a later write renews it."""
        return await self._resource(
            "POST", resource_path(collection), content=orjson.dumps(data), headers=_JSON, params=_ttl(ttl)
        )

    async def put(
        self,
        collection: str,
        id: str,
        data: dict[str, Any],
        *,
        if_match: int | str | None = None,
        create_only: bool = False,
        ttl: float | None = None,
    ) -> Resource:
        """Create or replace. `if_match=<revision>` replaces only that revision (else
        `PreconditionFailed`); `if_match="*"` only an existing resource; `create_only` only
        creates. `ttl`: a lease of that many seconds (renewed by each write with a ttl);
        without it the resource is permanent."""
        headers = {**_JSON, **if_match_header(if_match)}
        if create_only:
            headers["If-None-Match"] = "*"
        return await self._resource(
            "PUT",
            resource_path(collection, id),
            content=orjson.dumps(data),
            headers=headers,
            params=_ttl(ttl),
        )

    async def patch(
        self,
        collection: str,
        id: str,
        patch: dict[str, Any] | builtins.list[dict[str, Any]],
        *,
        if_match: int | str | None = None,
        ttl: float | None = None,
    ) -> Resource:
        """A JSON merge patch (a dict, RFC 7386) or a JSON patch (a list of ops, RFC 6902).
        `ttl` as for `put`: without it the resource is left permanent."""
        media_type = (
            "application/json-patch+json" if isinstance(patch, list) else "application/merge-patch+json"
        )
        headers = {"Content-Type": media_type, **if_match_header(if_match)}
        return await self._resource(
            "PATCH",
            resource_path(collection, id),
            content=orjson.dumps(patch),
            headers=headers,
            params=_ttl(ttl),
        )

    async def delete(self, collection: str, id: str, *, if_match: int | str | None = None) -> Resource:
        """Delete; returns the last state, whose `revision` is the deletion's."""
        return await self._resource(
            "DELETE", resource_path(collection, id), headers=if_match_header(if_match)
        )

    async def batch(self, ops: builtins.list[dict[str, Any]]) -> BatchResult:
        """Several writes, all or nothing: `{"op": "put"|"create"|"patch"|"delete",
        "collection", "id", "data"|"patch", "if_match"?, "ttl"?}` each."""
        body = await self._request("POST", "/v1/_batch", content=orjson.dumps({"ops": ops}), headers=_JSON)
        return BatchResult(body["revision"], [Resource.from_json(r) for r in body["results"]])

    # -- watching ----------------------------------------------------------------------------

    def watch(self, collection: str, id: str | None = None, **options: Unpack[WatchOptions]) -> AsyncWatch:
        """Watch a collection (or one resource): `async for event in client.watch(...)`.

        Starts after `since` (absent: now) or, with `initial=True`, with the current state as
        ADDED events ended by a BOOKMARK with `initial_events_end`. Reconnects by itself and
        resumes from the last revision it handed out. A connection silent for two heartbeats
        is taken for dead. On 410 raises `Expired`, or with `on_expired="relist"` lists again
        (a RESYNC event, then the current state, then changes). The keywords and their
        defaults are `AsyncWatch`'s."""
        return AsyncWatch(self, collection, id, **options)

    def live(self, collection: str, **options: Any) -> LiveCollection:
        """A `LiveCollection` of this client (see its arguments)."""
        from watchroute.client.live import LiveCollection

        return LiveCollection(self, collection, **options)


_JSON = {"Content-Type": "application/json"}


def _ttl(ttl: float | None) -> dict[str, str]:
    return {} if ttl is None else {"ttl": f"{ttl:g}"}
