"""Streaming watches, answered in front of the framework's routing.

A streaming watch lives as long as its client stays, and everything a framework keeps on the
stack for a request (routing, dependency solving, the exception middleware's frames) would stay
allocated as long, per watcher. This front answers `GET /v1/{c}?watch=true` and
`GET /v1/{c}/{id}?watch=true` itself, through the same parameter model, checks, errors and
`_watch` as the routes in `resources.py` (which still answer long-polls, and document the
route). It sits inside the security middleware: identity, grants and limits apply unchanged.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from watchroute.api.problems import problem_response
from watchroute.api.resources import WatchQuery, _filter, _watch
from watchroute.core.names import check_collection, check_id
from watchroute.core.problems import Problem, invalid_parameters
from watchroute.security.middleware import route_path

STREAMING = ("true", "1")
LIST_ONLY = frozenset({"limit", "continue", "revision"})


class StreamingWatchFront:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.params = TypeAdapter(WatchQuery)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        collection, id, query = target
        request = Request(scope, receive)
        try:
            query["Last-Event-ID"] = request.headers.get("last-event-id")
            params = self.params.validate_python(query)
            check_collection(collection)
            if id is not None:
                check_id(id)
            response = await _watch(request, collection, id, params, _filter(request, params.filter))
        except ValidationError as exc:
            response = problem_response(invalid_parameters(exc.errors()))
        except Problem as problem:
            response = problem_response(problem)
        # The response runs as long as the watch: keep nothing else of the request alive.
        del request, query, target
        await response(scope, receive, send)

    @staticmethod
    def _target(scope: Scope) -> tuple[str, str | None, dict[str, str | None]] | None:
        """(collection, id, query) of a streaming watch request; None for anything else."""
        if scope["type"] != "http" or scope["method"] != "GET" or b"watch=" not in scope["query_string"]:
            return None
        parts = route_path(scope).split("/")
        if len(parts) not in (3, 4) or parts[1] != "v1" or not all(parts[2:]) or parts[2][0] == "_":
            return None
        query: dict[str, str | None] = dict(
            parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        )
        if query.get("watch") not in STREAMING or not LIST_ONLY.isdisjoint(query):
            # The route checks the list's parameters too (and then streams the same way).
            return None
        return parts[2], parts[3] if len(parts) == 4 else None, query
