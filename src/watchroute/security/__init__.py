"""Security built in: authentication, grants and per-document rules that hold for watches,
limits, browser safety and the audit log. See docs/security.md for the decisions.

`install(app, security)` puts the door (middleware.py) and CORS in front of the app; routes ask
`Security.authorize` / `write_guard`, and `watch.open_watch` asks `Security.admit_watch`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported on first use: settings.py imports security.config, and the rest imports settings.
_EXPORTS = {
    "ANONYMOUS": "identity",
    "Identity": "identity",
    "identity_of": "identity",
    "Security": "policy",
    "WatchAdmission": "policy",
    "WriteGuard": "policy",
    "WatchSession": "session",
    "exposure_warning": "install",
    "install": "install",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
