"""The two PATCH formats: RFC 7386 merge patch and RFC 6902 JSON patch, read from a request and
applied by the writer inside the transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jsonpatch
import jsonpointer

from watchroute.core.problems import Problem, bad_request
from watchroute.wire.mergepatch import merge
from watchroute.wire.patch_budget import BoundedJsonPatch

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class Stored(Protocol):
    """What a patch applies to: a stored row, or the change an earlier write of the same
    transaction made."""

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def data_json(self) -> bytes: ...


# Applied to the current state with the largest document a write may leave (max_document_bytes).
Patch = Callable[[Stored, int], Any]


def merge_patch(document: Any) -> Patch:
    if not isinstance(document, dict):
        raise bad_request("BadPatch", "a merge patch of a resource must be a JSON object")

    # A merge patch's work is bounded by its body: it copies only the objects on its own paths.
    # The size of what it makes is checked by the writer, as for every write.
    def apply(current: Stored, max_bytes: int) -> Any:
        try:
            return merge(current.data, document)
        except RecursionError:
            # JSON nests deeper (orjson reads 1024 levels) than merge() can recurse
            raise Problem(422, "TooDeep", "the merge patch is nested too deeply") from None

    return apply


def json_patch(document: Any) -> Patch:
    if not isinstance(document, list):
        raise bad_request("BadPatch", "a JSON patch must be an array of operations")
    try:
        patch = BoundedJsonPatch(document)  # checks every operation's shape
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError) as exc:
        raise bad_request("BadPatch", f"invalid JSON patch: {exc}") from None

    def apply(current: Stored, max_bytes: int) -> Any:
        # The library's messages quote the stored value, or the whole document ("member 'x' not
        # found in {...}"): an error says where, in the caller's own words, never what is there.
        try:
            return patch.apply(current.data_json, max_bytes)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise Problem(409, "Conflict", f"JSON patch test failed{_where(exc)}") from None
        except jsonpatch.InvalidJsonPatch as exc:  # the operation's own shape: nothing stored
            raise Problem(422, "BadPatch", f"JSON patch cannot be applied: {exc}") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            detail = f"JSON patch cannot be applied{_where(exc)}: a location it names is missing"
            detail += " or not a container"
            raise Problem(422, "BadPatch", detail) from None

    return apply


def _where(exc: Exception) -> str:
    """` at PATH` for the operation that failed, as the patch named it, when known."""
    op = getattr(exc, "op", None)
    location = getattr(op, "location", None)
    return f" at {location[:200]!r}" if isinstance(location, str) else ""


def reads_document(document: Any) -> bool:
    """Whether a JSON patch compares the stored document (a `test` op): a read, whose success
    or failure tells the value; it takes the `read` grant (docs/security.md, *Grants*)."""
    return isinstance(document, list) and any(
        isinstance(op, dict) and op.get("op") == "test" for op in document
    )


def for_media_type(media_type: str, document: Any) -> Patch:
    if media_type == JSON_PATCH:
        return json_patch(document)
    if media_type in (MERGE_PATCH, "application/json"):
        return merge_patch(document)
    raise Problem(
        415,
        "UnsupportedMediaType",
        f"PATCH takes {MERGE_PATCH} or {JSON_PATCH}, not {media_type or 'no Content-Type'}",
    )
