"""Applying a JSON patch within bounds: the document it makes, and what it may copy.

A patch runs in the store's writer, inside the write transaction, and a few bytes of it can ask
for a lot: each `copy` of `/b` into `/b/cN` doubles the document, so twenty of them in a
950-byte body make a document of a hundred megabytes, and every other write waits meanwhile.
So the size the document would have is kept op by op (each value an op adds or copies, less each
one it replaces or removes, measured as JSON), and the patch is refused (413 DocumentTooLarge)
as soon as an op would take it past `max_document_bytes`, before that op does the work. Copies
are the one op whose cost is not paid for by the body that asks for it: everything a patch
copies, together, may not exceed `max_document_bytes` either (422 PatchTooCostly), so that
copying a large value over itself again and again is bounded too. A value's size is that of its
JSON without the member name: the names an op adds are in the patch body already, and the
writer checks the exact size of the result (store/ops.py).

The document is decoded afresh from its stored JSON, which orjson does several times faster
than `copy.deepcopy` would copy the decoded one, and a copied value is cloned through the JSON
it was measured by.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import orjson
from jsonpointer import EndOfList, JsonPointer, JsonPointerException

from watchroute.core.problems import Problem, document_too_large


class BoundedJsonPatch:
    """A JSON patch, parsed and measured where the request is read, applied in the writer."""

    __slots__ = ("_steps",)

    def __init__(self, document: list[Any]) -> None:
        # Raises what jsonpatch raises for a malformed operation (the caller makes it a 400).
        checked = jsonpatch.JsonPatch(document)
        steps = []
        for raw in checked.patch:
            kind = raw["op"]
            operation = jsonpatch.JsonPatch.operations[kind](raw)
            # What an add or a replace puts in, measured once, here rather than in the writer
            # (without a value, the op refuses itself when applied).
            size = len(_encode(raw["value"])) if kind in ("add", "replace") and "value" in raw else 0
            source = None
            if kind == "copy":
                if not isinstance(raw.get("from"), str):
                    raise jsonpatch.InvalidJsonPatch("a copy operation needs a 'from' pointer")
                source = JsonPointer(raw["from"])
            steps.append((kind, operation, JsonPointer(raw["path"]), source, size))
        self._steps = steps

    def apply(self, data_json: bytes, max_bytes: int) -> Any:
        """The patched document, from the current one's JSON; Problem or jsonpatch's errors
        to refuse."""
        document = orjson.loads(data_json)
        size = len(data_json)
        copied = 0
        for kind, operation, pointer, source, value_size in self._steps:
            if kind == "copy":
                assert source is not None
                encoded = _encode(_at(document, source))
                size = _grown(size, len(encoded) - _held(document, pointer, inserting=True), max_bytes)
                copied += len(encoded)
                if copied > max_bytes:
                    raise Problem(
                        422,
                        "PatchTooCostly",
                        f"the patch copies more than {max_bytes} bytes in all (max_document_bytes)",
                    )
                document = _insert(document, pointer, orjson.loads(encoded))
                continue
            if kind in ("add", "replace", "remove"):
                held = _held(document, pointer, inserting=kind == "add")
                size = _grown(size, value_size - held, max_bytes)
            document = operation.apply(document)
        return document


def _grown(size: int, by: int, max_bytes: int) -> int:
    size += by
    # Only growth is refused: a document already past the limit (the limit was lowered since)
    # may still shrink on the way; the writer checks where it ends.
    if by > 0 and size > max_bytes:
        raise document_too_large(max_bytes)
    return size


def _held(document: Any, pointer: JsonPointer, inserting: bool) -> int:
    """The size of the value at `pointer` that an op replaces or removes; 0 for none (an op
    that inserts into an array replaces nothing; a path that does not resolve is the op's to
    refuse)."""
    try:
        parent, part = pointer.to_last(document)
    except JsonPointerException:
        return 0
    if part is None:
        return len(_encode(document))
    if isinstance(parent, dict):
        return len(_encode(parent[part])) if part in parent else 0
    if isinstance(parent, list) and not inserting and isinstance(part, int) and part < len(parent):
        return len(_encode(parent[part]))
    return 0


def _at(document: Any, pointer: JsonPointer) -> Any:
    # jsonpointer's own messages show the document: they would echo stored values.
    try:
        value = pointer.resolve(document)
    except JsonPointerException:
        value = EndOfList(None)
    if isinstance(value, EndOfList):
        raise jsonpatch.JsonPatchConflict(f"nothing to copy at {pointer.path!r}")
    return value


def _insert(document: Any, pointer: JsonPointer, value: Any) -> Any:
    """What RFC 6902's `add` does with `value`, which is the patch's own: no copy of it."""
    try:
        parent, part = pointer.to_last(document)
    except JsonPointerException:
        raise jsonpatch.JsonPatchConflict(f"no object or array to add to at {pointer.path!r}") from None
    if part is None:
        return value
    if isinstance(parent, list):
        if part == "-":
            parent.append(value)
        elif isinstance(part, int) and 0 <= part <= len(parent):
            parent.insert(part, value)
        else:
            raise jsonpatch.JsonPatchConflict(f"can't insert outside of list at {pointer.path!r}")
    elif isinstance(parent, dict):
        parent[part] = value
    else:
        raise jsonpatch.JsonPatchConflict(f"{pointer.path!r} is not in an object or an array")
    return document


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        # orjson reads 1024 levels of nesting but writes only 254: what cannot be stored is refused.
        raise Problem(
            422, "TooDeep", f"the patch would make a resource that cannot be stored: {exc}"
        ) from None
