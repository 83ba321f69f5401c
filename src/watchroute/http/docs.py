"""The interactive API docs at `/docs`, served whole by this server.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script: blank
without internet, and against the policy the dashboard's pages are served under. This page
takes Swagger UI's files from the `fastapi-offline` package (which ships swagger-ui-dist) and
starts it from a script of its own, so that it works offline and with no inline script.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

from watchroute.compression import accepts_gzip, compressed, gzip_bytes
from watchroute.core.problems import Problem
from watchroute.http.ui import SECURITY_HEADERS, etag_of, unchanged

router = APIRouter(tags=["system"])

# Swagger UI's files, as the package ships them.
VENDORED = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}

START = b"""// Starts Swagger UI on the OpenAPI document named by the page (it may be mounted under a prefix).
const target = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: target.dataset.openapi,
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
});
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="icon" type="image/png" href="{root}/docs/favicon.png">
<link rel="stylesheet" href="{root}/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi="{root}{openapi}"></div>
<script src="{root}/docs/swagger-ui-bundle.js"></script>
<script src="{root}/docs/start.js"></script>
</body>
</html>
"""


@cache
def _vendored(name: str) -> tuple[bytes, str]:
    body = resources.files("fastapi_offline").joinpath("static", name).read_bytes()
    return body, etag_of(body)


@cache
def _packed(name: str) -> bytes:
    """A vendored file gzip-encoded once, as small as zlib makes it: Swagger UI's script is
    large, and packs to about a quarter of its size."""
    return gzip_bytes(_vendored(name)[0], level=9)


async def _answer(request: Request, body: bytes, etag: str, media_type: str, name: str = "") -> Response:
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if unchanged(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    min_bytes = request.app.state.runtime.settings.compress_min_bytes
    if name and min_bytes and len(body) >= min_bytes:
        headers["Vary"] = "Accept-Encoding"
        if accepts_gzip(request.headers.get("accept-encoding")):
            headers["Content-Encoding"] = "gzip"
            return Response(_packed(name), headers=headers, media_type=media_type)
    return await compressed(request, Response(body, headers=headers, media_type=media_type), min_bytes)


@router.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
async def docs_page(request: Request) -> Response:
    root = request.scope.get("root_path", "").rstrip("/")
    page = PAGE.format(title=request.app.title, root=root, openapi=request.app.openapi_url).encode()
    return await _answer(request, page, etag_of(page), "text/html; charset=utf-8")


@router.api_route("/docs/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def docs_file(request: Request, name: str) -> Response:
    if name == "start.js":
        return await _answer(request, START, etag_of(START), "text/javascript; charset=utf-8")
    if name not in VENDORED:
        raise Problem(404, "NotFound", f"the API docs have no file {name!r}")
    body, etag = _vendored(name)
    return await _answer(request, body, etag, VENDORED[name], name)
