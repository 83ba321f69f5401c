"""The door: every HTTP request and WebSocket upgrade passes here before any route.

In order: the Host header against the allow-list (hosts.py: no DNS rebinding); the client
address's request bucket; for `/v1/...` (and `/metrics` when authentication is on), the
credential (Authorization: Bearer, X-API-Key, `?access_token=` on GET and upgrades, or the auth
cookie) resolved to an Identity, once, into `scope["state"]["identity"]`; browser checks (a
cookie, being ambient authority, only counts from an allowed origin; a WebSocket from a foreign
origin is refused unless it carries its own token); then the identity's request bucket.
`/metrics` asks for the `metrics` scope; the other system routes (health, readiness, the API
documents) are public.

`access_token` is taken out of the query string before the request goes further, so no route,
error message or log line downstream ever sees it.

Refusals are problem details (401, 403, 421, 429 with Retry-After). A refused WebSocket upgrade
is accepted, sent one ERROR event and closed with 4000 + status, as http/ws.py does for every
refusal, because a browser cannot read the status of a refused handshake; a foreign host, a
foreign origin and a flood are refused at the handshake itself (421 / 403 / 429), which costs
the server the least.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import cookie_parser
from starlette.types import Receive, Scope, Send

from watchroute.core.problems import Problem
from watchroute.security import audit
from watchroute.security.grants import METRICS_SCOPE
from watchroute.security.hosts import UNCHECKED_PATHS, host_header, misdirected
from watchroute.security.identity import UNAUTHENTICATED, Identity
from watchroute.security.policy import Security
from watchroute.security.refusals import forbidden, rate_limited, unauthorized
from watchroute.wire.events import error_json
from watchroute.wire.problems import send_problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Routes that show the server's figures: public without authentication, else the metrics scope.
METRICS_PATHS = frozenset({"/metrics", "/ui/status.json"})


def route_path(scope: Scope) -> str:
    """The path below where the app is mounted."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def strip_access_token(query: bytes) -> bytes:
    if b"access_token" not in query:
        return query
    return b"&".join(p for p in query.split(b"&") if not p.startswith(b"access_token="))


def access_token(query: bytes) -> str | None:
    from urllib.parse import unquote_plus

    for part in query.split(b"&"):
        if part.startswith(b"access_token="):
            return unquote_plus(part[len(b"access_token=") :].decode("latin-1")) or None
    return None


class RequestHeaders:
    """The request's headers by lower-case name, the first of repeated ones (as Starlette's
    `Headers.get`): one dict made at C speed, where `Headers.get` scans the list and raises a
    KeyError inside for every header that is absent (most of those asked for here)."""

    __slots__ = ("_raw",)

    def __init__(self, scope: Scope) -> None:
        raw = scope["headers"]
        if not isinstance(raw, list | tuple):
            raw = list(raw)
        self._raw: dict[bytes, bytes] = dict(reversed(raw))

    def get(self, name: str) -> str | None:
        value = self._raw.get(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")


class SecurityDoor:
    """The checks above, as one step of the server's one layer (http/door.py)."""

    def __init__(self, security: Security) -> None:
        self.security = security

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> Scope | None:
        """The request's scope to serve (with the caller's identity, without `access_token`),
        or None when the request was refused here and its answer already sent."""
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return scope
        security = self.security
        client = scope.get("client")
        address = client[0] if client else None
        method = scope.get("method", "GET") if kind == "http" else "WS"
        path = route_path(scope)
        where = f"{method} {path}"

        host = host_header(scope)
        if not security.hosts.allows(host) and path not in UNCHECKED_PATHS:
            assert host is not None
            audit.record(audit.DENIED, "host not allowed", address=address, method=method, path=path)
            await self._refuse(scope, receive, send, misdirected(host), True)
            return None
        wait = await security.take("rate_limit_ip", address)
        if wait:
            audit.record(audit.RATE_LIMITED, "rate_limit_ip", address=address, method=method, path=path)
            await self._refuse(scope, receive, send, rate_limited("too many requests; slow down", wait), True)
            return None
        # The dashboard's status figures are a few of /metrics': the same scope guards both.
        metrics = path in METRICS_PATHS and security.mode != "none"
        if not (path == "/v1" or path.startswith("/v1/") or metrics):
            return scope  # system routes and documents are public

        headers = RequestHeaders(scope)
        query = scope.get("query_string", b"")
        credential, source = self._credential(headers, query, method)
        if credential is None and security.mode != "none":
            if kind == "websocket" and path == "/v1/_watch":
                identity = UNAUTHENTICATED.at(address)  # may still send {"op": "auth"}
            else:
                audit.record(audit.AUTH_FAILED, "no credential", address=address, method=method, path=path)
                problem = unauthorized(
                    "missing credentials: send Authorization: Bearer <token> (or ?access_token= on a watch)"
                )
                await self._refuse(scope, receive, send, problem)
                return None
        else:
            try:
                identity = await security.authenticate(credential or "", address, source or "none", where)
            except Problem as problem:
                await self._refuse(scope, receive, send, problem)
                return None

        if metrics and METRICS_SCOPE not in identity.scopes:
            audit.record(
                audit.DENIED, "no grant", subject=identity.subject, address=address, method=method, path=path
            )
            await self._refuse(
                scope, receive, send, forbidden(f"{path} needs a credential with the metrics scope")
            )
            return None
        refusal = self._browser_refusal(headers, identity, kind, method)
        if refusal is not None:
            audit.record(
                audit.DENIED, refusal, subject=identity.subject, address=address, method=method, path=path
            )
            await self._refuse(scope, receive, send, forbidden(refusal, "ForeignOrigin"), True)
            return None

        wait = await security.take("rate_limit_identity", identity.key)
        if wait:
            audit.record(
                audit.RATE_LIMITED,
                "rate_limit_identity",
                subject=identity.subject,
                address=address,
                method=method,
                path=path,
            )
            await self._refuse(scope, receive, send, rate_limited("too many requests; slow down", wait), True)
            return None

        # The scope is this request's own (the door is the first to see it), but its `state`
        # may be shared by the server among requests: a copy of that holds the identity.
        scope["state"] = {**scope.get("state", {}), "identity": identity}
        if source == "query":
            scope["query_string"] = strip_access_token(query)
        return scope

    def _credential(
        self, headers: RequestHeaders, query: bytes, method: str
    ) -> tuple[str | None, str | None]:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip(), "header"
        api_key = headers.get("x-api-key")
        if api_key:
            return api_key.strip(), "header"
        if method in ("GET", "HEAD", "WS"):
            token = access_token(query)
            if token:
                return token, "query"
        cookie = headers.get("cookie")
        if cookie:
            from_cookie = cookie_parser(cookie).get(self.security.settings.auth_cookie)
            if from_cookie:
                return from_cookie, "cookie"
        return None, None

    def _browser_refusal(
        self, headers: RequestHeaders, identity: Identity, kind: str, method: str
    ) -> str | None:
        """Why a browser's request from another site is refused, or None.

        A credential the page itself supplied (a header, the query) proves the page holds it; a
        cookie, or no credential at all (auth=none trusts the network), would let any site the
        user visits act as the user, so those count only from the same or an allowed origin.
        """
        origin = headers.get("origin")
        if origin is None or identity.source in ("header", "query"):
            return None
        if kind == "http" and method in SAFE_METHODS:
            return None  # CORS keeps another site from reading the answer
        if self._same_origin(origin, headers) or origin.rstrip("/") in self.security.allowed_origins:
            return None
        what = "WebSocket" if kind == "websocket" else f"{method} request"
        return f"a {what} from origin {origin[:100]} must bring its own token (not a cookie)"

    @staticmethod
    def _same_origin(origin: str, headers: RequestHeaders) -> bool:
        host = headers.get("host")
        try:
            return host is not None and urlsplit(origin).netloc.lower() == host.lower()
        except ValueError:
            return False

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, problem: Problem, at_handshake: bool = False
    ) -> None:
        if scope["type"] == "http":
            await send_problem(problem, send)
            return
        message = await receive()  # websocket.connect
        if message["type"] != "websocket.connect":
            return
        if at_handshake:
            if "websocket.http.response" in scope.get("extensions", {}):
                await send_problem(problem, send, prefix="websocket.http")
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": error_json(problem.to_dict()).decode()})
        await send({"type": "websocket.close", "code": 4000 + problem.status, "reason": problem.reason})
