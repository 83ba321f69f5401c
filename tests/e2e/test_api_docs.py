"""`/docs` works without internet: the page names only this server's files, they are served,
and Swagger UI renders the API under the page's policy (no inline script)."""

from __future__ import annotations

import gzip
import re
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(90)


def test_the_docs_page_references_only_local_files_and_they_are_served(api):
    page = api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = page.text
    assert "<script>" not in html  # every script is a file of this server
    references = re.findall(r'(?:src|href|data-openapi)="([^"]+)"', html)
    assert len(references) == 5, references
    for url in references:
        assert url.startswith("/") and not url.startswith("//"), url  # this server, no CDN
        served = api.get(url)
        assert served.status_code == 200, url
    assert api.get("/docs/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert api.get("/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert api.get("/openapi.json").json()["info"]["title"] == "watchroute"
    assert api.get("/docs/nothing.js").status_code == 404


def test_swagger_ui_is_sent_gzipped_and_revalidated(api):
    with api.stream("GET", "/docs/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
        etag = r.headers["etag"]
        assert r.headers["content-encoding"] == "gzip"
    assert b"SwaggerUIBundle" in gzip.decompress(raw) and len(raw) < 600_000
    again = api.get("/docs/swagger-ui-bundle.js", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_swagger_ui_renders_offline_under_the_policy(api, browser):
    base = str(api.base_url).rstrip("/")
    context = browser.new_context()
    elsewhere: list[str] = []
    refused: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:  # as without internet
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_server)
    page = context.new_page()
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    errors: list[Any] = []
    page.on("pageerror", lambda error: errors.append(error))
    try:
        page.goto(base + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "watchroute" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path", timeout=10_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
        assert any("/v1/{collection}" in path for path in paths), paths
    finally:
        context.close()
    assert not elsewhere, elsewhere
    assert not refused, refused
    assert not errors, errors


def test_redoc_is_not_served(api):
    # FastAPI's /redoc page loads its script from a CDN: it is left out rather than left blank.
    assert api.get("/redoc").status_code == 404
