"""RFC 7386 merge patches: applying one (what PATCH with `application/merge-patch+json` does on
the server, and what a `format=patch` watch does in the client) and the one from a state to the
next (what a `format=patch` watch carries). Free of dependencies but orjson, so that the client
can use it without loading the server."""

from __future__ import annotations

from typing import Any

import orjson


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


def merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that turns `old` into `new`, or None when no merge patch can: RFC 7386
    reads null as "remove", so a null that `new` holds inside an object cannot be written."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key, _ABSENT)
        if isinstance(value, dict) and isinstance(before, dict):
            inner = merge_diff(before, value)
            if inner is None:
                return None
            if inner:
                patch[key] = inner
        elif _same(before, value):
            continue
        elif value is None or _holds_null_member(value):
            return None
        else:
            patch[key] = value
    return patch


_ABSENT = object()


def _same(a: Any, b: Any) -> bool:
    # By their JSON, so that 1 -> 1.0 and true -> 1 are changes, as they are on the wire.
    if a is _ABSENT or type(a) is not type(b):
        return False
    if isinstance(a, list):
        return orjson.dumps(a) == orjson.dumps(b)
    return a == b


def _holds_null_member(value: Any) -> bool:
    """A null member of an object, at any depth through objects (lists are taken whole)."""
    return isinstance(value, dict) and any(v is None or _holds_null_member(v) for v in value.values())
