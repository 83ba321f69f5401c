"""The demo pages at `/demos/{name}`: static pages that show what a watch route is for.

Each page pairs with a script in `demos/` that writes what it shows (a sensor simulator, bidding
robots, a shared list, a chat room). They ship inside the package beside the dashboard and are served the
same way and under the same policy, public like it: what a page shows it reads from `/v1/`, on
the same origin, with no credential of its own.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

from watchroute.core.problems import Problem
from watchroute.http.ui import SECURITY_HEADERS, etag_of, unchanged

router = APIRouter(tags=["system"])

HTML = "text/html; charset=utf-8"
SCRIPT = "text/javascript; charset=utf-8"
# What `/demos/{name}` serves: a page by its demo's name, and the files the pages load.
FILES = {
    "iot": ("iot.html", HTML),
    "auction": ("auction.html", HTML),
    "collab": ("collab.html", HTML),
    "chat": ("chat.html", HTML),
    "iot.js": ("iot.js", SCRIPT),
    "auction.js": ("auction.js", SCRIPT),
    "collab.js": ("collab.js", SCRIPT),
    "chat.js": ("chat.js", SCRIPT),
    "watch.js": ("watch.js", SCRIPT),
    "demos.css": ("demos.css", "text/css; charset=utf-8"),
}


@cache
def _file(name: str) -> tuple[bytes, str]:
    body = resources.files("watchroute").joinpath("ui", "demos", name).read_bytes()
    return body, etag_of(body)


@router.api_route("/demos/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def demo_file(request: Request, name: str) -> Response:
    if name not in FILES:
        raise Problem(404, "NotFound", f"there is no demo file {name!r}")
    file, media_type = FILES[name]
    body, etag = _file(file)
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if unchanged(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=media_type)
