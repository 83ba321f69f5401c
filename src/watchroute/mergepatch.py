"""Applying an RFC 7386 merge patch: what PATCH with `application/merge-patch+json` does on the
server, and what a `format=patch` watch does in the client. Free of dependencies, so that the
client can use it without loading the server."""

from __future__ import annotations

from typing import Any


def merge(target: Any, patch: Any) -> Any:
    """Objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result
