"""HTTP requests by method, route template and status, for `/metrics`.

Counted in the server's one layer (http/door.py), which every HTTP request passes: one
dictionary add per response, with the status the response's head was written with
(server/uvicorn.py reads it from the status line), once the app has answered; a watch
stream, which the server hands over once its head is out, counts as it opens. Under another
server, and for the few requests whose head is not held (HEAD, `Expect: 100-continue`), a
wrapper of `send` sees the status instead. A label is the route's template
(`/v1/{collection}/{id}`), never the path asked for, which would make a series per resource;
a path no route has is `other`, and so is a method no route takes.

WebSocket upgrades are not HTTP responses and are not counted here
(`watchroute_watchers_by_transport` has them).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from starlette.types import Message, Scope, Send

from watchroute.security.middleware import route_path

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
_PARAMETER = re.compile(r"{[^}/]+}")


class HTTPCounts:
    def __init__(self) -> None:
        # (method, template, status) -> responses started
        self.counts: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self._literal: dict[str, str] = {}
        # By slash count, the routes whose parameters are their last segments, each as the
        # literal prefix before them (`/v1/` for `/v1/{collection}/{id}`): string tests at C
        # speed, where a regular expression cost about a microsecond a request.
        self._trailing: defaultdict[int, list[tuple[str, str]]] = defaultdict(list)
        # Any other route with parameters (none of the app's own, so far).
        self._patterns: defaultdict[int, list[tuple[re.Pattern[str], str]]] = defaultdict(list)

    def learn(self, templates: Iterable[str]) -> None:
        """The app's route templates, as its routes declare them (`/v1/{collection}`)."""
        for template in templates:
            if "{" not in template:
                self._literal[template] = template
                continue
            slashes = template.count("/")
            prefix = template[: template.index("{")]
            if prefix.endswith("/") and re.fullmatch(r"(\{[^}/:]+\}/)*\{[^}/:]+\}", template[len(prefix) :]):
                if (prefix, template) not in self._trailing[slashes]:
                    self._trailing[slashes].append((prefix, template))
            else:
                self._patterns[slashes].append((re.compile("".join(_pieces(template))), template))

    def template(self, path: str) -> str:
        found = self._literal.get(path)
        if found is not None:
            return found
        slashes = path.count("/")
        if not path.endswith("/") and "//" not in path:  # no empty segment
            for prefix, template in self._trailing.get(slashes, ()):
                if path.startswith(prefix):
                    return template
        for pattern, template in self._patterns.get(slashes, ()):
            if pattern.fullmatch(path):
                return template
        return OTHER

    def count(self, scope: Scope, status: int) -> None:
        """One response to the request of `scope`."""
        method = scope["method"]
        self.counts[(method if method in METHODS else OTHER, self.template(route_path(scope)), status)] += 1

    def counting(self, scope: Scope, send: Send) -> Send:
        """`send`, counting the response when it starts: where the head's writer cannot tell
        its status (server/uvicorn.py), at the cost of a coroutine per message."""

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.count(scope, message["status"])
            await send(message)

        return counted


def _pieces(template: str) -> Iterable[str]:
    """A regular expression of `template`, each parameter one segment."""
    at = 0
    for match in _PARAMETER.finditer(template):
        yield re.escape(template[at : match.start()])
        yield "[^/]+"
        at = match.end()
    yield re.escape(template[at:])
