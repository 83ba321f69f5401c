"""The live dashboard at `/ui`: a page that watches one collection from the browser.

The page and its two files ship inside the package and are served as they are, public like the
other system routes: everything the page shows it reads from `/v1/` with the visitor's own
credential, but for its status panel's figures, which `/ui/status.json` reads from what
`/metrics` shows. It is plain HTML, script modules and a style sheet, with nothing to build.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from watchroute.core.problems import Problem

router = APIRouter(tags=["system"])

MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "editor.js": "text/javascript; charset=utf-8",
    "panels.js": "text/javascript; charset=utf-8",
    "shared.js": "text/javascript; charset=utf-8",
    "table.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

# Scripts, styles and connections from this server only, and no inline script at all: the page
# shows documents anyone may have written, so markup smuggled into one must never run. The page
# writes them as text; this policy holds even if a mistake ever let one through as markup.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (answered 304 while unchanged): a new version shows at once.
    "Cache-Control": "no-cache",
}


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


@cache
def _file(name: str) -> tuple[bytes, str]:
    body = resources.files("watchroute").joinpath("ui", name).read_bytes()
    return body, etag_of(body)


def unchanged(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match compares weakly (RFC 9110): `W/"x"` matches `"x"`; it may list several
    tags, or be `*`."""
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return etag in tags or "*" in tags


def _serve(request: Request, name: str) -> Response:
    body, etag = _file(name)
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if unchanged(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=MEDIA_TYPES[name])


# HEAD too: a link checker or a proxy asks with it, and is told what GET would answer. Left out
# of OpenAPI, where it would be one more operation of the same page.
@router.head("/ui", include_in_schema=False)
@router.get(
    "/ui",
    summary="The live dashboard: watch a collection in the browser",
    response_class=Response,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
)
async def dashboard(request: Request) -> Response:
    return _serve(request, "index.html")


# The figures the console's status panel shows, by their /metrics names. Under --workers every
# worker follows the same log, so the log's figures are the newest worker's (a sum would count
# each write once per worker); watchers and deliveries are each worker's own, added up.
LOG_FIGURES = {
    "watchroute_revision": "revision",
    "watchroute_compacted_revision": "horizon",
    "watchroute_window_first_revision": "window_first_revision",
    "watchroute_commits": "commits",
    "watchroute_changes": "changes",
}
OWN_FIGURES = {
    "watchroute_watchers": "watchers",
    "watchroute_hub_pushes": "deliveries",
    "watchroute_hub_wakeups": "deliveries",
}
BY_TRANSPORT = "watchroute_watchers_by_transport"


@router.get("/ui/status.json", summary="The figures of the dashboard's status panel")
async def dashboard_status(request: Request) -> dict[str, Any]:
    """What /metrics says, as JSON for the page: read from the same families (every worker's
    under --workers), so that it costs the data path nothing more than a scrape does."""
    figures: dict[str, float] = defaultdict(float)
    by_transport: dict[str, float] = defaultdict(float)
    workers: set[str] = set()
    bridges: dict[str, dict[str, Any]] = {}
    for family in await request.app.state.runtime.metrics.families(process=False):
        name = family.name
        if name in BRIDGE_FIGURES:
            _take_bridge_figures(bridges, family)
            continue
        if name not in LOG_FIGURES and name not in OWN_FIGURES and name != BY_TRANSPORT:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            workers.add(sample.labels.get("worker", "0"))
            if name == BY_TRANSPORT:
                by_transport[sample.labels["transport"]] += sample.value
            elif name in OWN_FIGURES:
                figures[OWN_FIGURES[name]] += sample.value
            else:
                figures[LOG_FIGURES[name]] = max(figures[LOG_FIGURES[name]], sample.value)
    return {
        **{name: int(value) for name, value in figures.items()},
        "watchers_by_transport": {t: int(n) for t, n in sorted(by_transport.items()) if n},
        "instances": max(1, len(workers)),
        "bridges": [bridges[name] for name in sorted(bridges)],
    }


# The bridges' families (bridges/status_metrics.py): each bridge's row shows the figures of the
# worker or instance that leads it; one that leads it nowhere here shows as on standby.
BRIDGE_FIGURES = {
    "watchroute_bridge_state": "state",
    "watchroute_bridge_lag": "lag",
    "watchroute_bridge_published": "published",
    "watchroute_bridge_errors": "errors",
}


def _take_bridge_figures(bridges: dict[str, dict[str, Any]], family: Any) -> None:
    field = BRIDGE_FIGURES[family.name]
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue
        row = bridges.setdefault(
            sample.labels["bridge"], {"name": sample.labels["bridge"], "state": "standby"}
        )
        if field != "state":
            row[field] = int(sample.value)
        elif sample.value and sample.labels["state"] != "standby":
            row["state"] = sample.labels["state"]


@router.api_route("/ui/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def dashboard_file(request: Request, name: str) -> Response:
    if name not in MEDIA_TYPES or name == "index.html":
        raise Problem(404, "NotFound", f"the dashboard has no file {name!r}")
    return _serve(request, name)
