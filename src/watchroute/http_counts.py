"""HTTP requests by method, route template and status, for `/metrics`.

Counted in the app's outermost layer, which every HTTP request passes (also the writes and
streaming watches answered in front of the routing, api/write_front.py and watch_front.py):
one dictionary add when the response starts. A label is the route's template
(`/v1/{collection}/{id}`), never the path asked for, which would make a series per resource;
a path no route has is `other`, and so is a method no route takes.

A streaming watch counts when its response starts, not when it ends; WebSocket upgrades are
not HTTP responses and are not counted here (`watchroute_watchers_by_transport` has them).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from starlette.types import Message, Scope, Send

from .security.middleware import route_path

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
_PARAMETER = re.compile(r"{[^}/]+}")


class HTTPCounts:
    def __init__(self) -> None:
        # (method, template, status) -> responses started
        self.counts: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self._literal: dict[str, str] = {}
        # By segment count: (pattern, template) of the routes with parameters.
        self._patterns: defaultdict[int, list[tuple[re.Pattern[str], str]]] = defaultdict(list)

    def learn(self, templates: Iterable[str]) -> None:
        """The app's route templates, as its routes declare them (`/v1/{collection}`)."""
        for template in templates:
            if "{" not in template:
                self._literal[template] = template
                continue
            # A parameter is one segment (the app has no `{x:path}` routes); order as declared.
            pattern = re.compile("".join(_pieces(template)))
            bucket = self._patterns[template.count("/")]
            if all(t != template for _, t in bucket):
                bucket.append((pattern, template))

    def template(self, path: str) -> str:
        found = self._literal.get(path)
        if found is not None:
            return found
        for pattern, template in self._patterns.get(path.count("/"), ()):
            if pattern.fullmatch(path):
                return template
        return OTHER

    def counting(self, scope: Scope, send: Send) -> Send:
        """`send`, counting the response when it starts."""
        counts = self.counts

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                method = scope["method"]
                key = (
                    method if method in METHODS else OTHER,
                    self.template(route_path(scope)),
                    message["status"],
                )
                counts[key] += 1
            await send(message)

        return counted


def _pieces(template: str) -> Iterable[str]:
    at = 0
    for match in _PARAMETER.finditer(template):
        yield re.escape(template[at : match.start()])
        yield "[^/]+"
        at = match.end()
    yield re.escape(template[at:])
