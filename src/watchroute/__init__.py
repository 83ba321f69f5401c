"""watchroute: REST resources with a watch route, every change pushed as it commits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from watchroute.app import create_app
    from watchroute.settings import Settings

__all__ = ["Settings", "__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `watchroute.client` starts without loading the server
    # (FastAPI, pydantic-settings), and the CLI's client commands without FastAPI.
    if name == "create_app":
        from watchroute.app import create_app

        return create_app
    if name == "Settings":
        from watchroute.settings import Settings

        return Settings
    raise AttributeError(f"module 'watchroute' has no attribute {name!r}")
