"""Putting security in front of an app: CORS, the OpenAPI document, the warning, and tokens
kept out of the server's log lines. The door itself (middleware.py) is a step of the server's
one layer (http/door.py)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from watchroute.security import audit, redaction
from watchroute.security.policy import Security

log = logging.getLogger("watchroute")

CORS_HEADERS = ["Authorization", "Content-Type", "If-Match", "If-None-Match", "Last-Event-ID", "X-API-Key"]
EXPOSED_HEADERS = ["ETag", "Location", "Retry-After", "WWW-Authenticate"]


def exposure_warning(settings: Any) -> str | None:
    """The warning for an unauthenticated server reachable from other machines, or None."""
    if settings.auth != "none":
        return None
    host = settings.host
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"\n{'!' * 78}\n"
        f"  watchroute is serving {host} WITHOUT AUTHENTICATION (--auth none).\n"
        f"  Anyone who can reach this address can read, write and watch every collection.\n"
        f"  Use --auth jwt or --auth apikey (docs/security.md), or bind to 127.0.0.1.\n"
        f"{'!' * 78}"
    )


def install(app: FastAPI, security: Security) -> None:
    audit.install()
    redaction.install()
    warning = exposure_warning(app.state.runtime.settings)
    if warning:
        log.warning(warning)
    _document(app, security)


def with_cors(app: ASGIApp, security: Security) -> ASGIApp:
    """`app` answering the allowed origins' CORS requests, when there are any. Put outside the
    door, so that its refusals (401, 429) carry CORS headers a browser page can read."""
    origins = sorted(security.allowed_origins)
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=CORS_HEADERS,
        expose_headers=EXPOSED_HEADERS,
    )


def _document(app: FastAPI, security: Security) -> None:
    """The credentials and refusals of /v1 routes, in the OpenAPI document."""
    build = app.openapi
    if security.mode == "none" and not any(security.rates.values()):
        return

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
        refusals = {
            "401": {"description": "Missing or invalid credentials", "content": problem},
            "403": {
                "description": "No grant for this collection, or refused by its rule",
                "content": problem,
            },
            "429": {"description": "Rate limited: see Retry-After", "content": problem},
        }
        if security.mode != "none":
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "accessToken": {"type": "apiKey", "in": "query", "name": "access_token"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": security.settings.auth_cookie},
            }
        guarded_metrics = security.mode != "none"
        for path, operations in schema.get("paths", {}).items():
            if not (path.startswith("/v1/") or (path == "/metrics" and guarded_metrics)):
                continue
            for operation in operations.values():
                for status, response in refusals.items():
                    operation.setdefault("responses", {}).setdefault(status, response)
                if security.mode != "none":
                    operation["security"] = [{"bearer": []}, {"accessToken": []}, {"cookie": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document
