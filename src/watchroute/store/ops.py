"""What one write does to one resource, the same for every engine.

The engine reads the current row inside its transaction, calls `apply`, and writes what comes
back; every refusal is a Problem raised before anything is written. The current state is a stored
Row, or the Change an earlier write of the same transaction made (both carry revision,
created_revision, data_json and data).
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from ..events import ADDED, DELETED, MODIFIED, Change, encode
from ..problems import Problem, not_found, precondition_failed
from .base import Row, WriteOp


def apply(op: WriteOp, current: Row | Change | None, revision: int, ts: float) -> Change:
    """The change `op` makes at `revision`, given the resource's current row."""
    try:
        return _apply(op, current, revision, ts)
    except Problem as problem:
        # The refused op itself, so that a batch can say which of its ops it was (`op_index`).
        problem.op = op  # type: ignore[attr-defined]
        raise


def _apply(op: WriteOp, current: Row | Change | None, revision: int, ts: float) -> Change:
    guard = op.guard
    if guard is not None and current is not None:
        guard.current(current.data)  # first: a hidden resource's revision must not leak (412)
    if current is None:
        if op.kind in ("patch", "delete"):
            raise not_found(op.collection, op.id)
        if op.if_match is not None or op.must_exist:
            raise precondition_failed(f"{op.collection}/{op.id} does not exist")
        data = op.data or {}
        if guard is not None:
            guard.new(data)
        return Change(revision, ADDED, op.collection, op.id, revision, _data_json(op, data), None, ts)

    if op.must_not_exist:
        raise precondition_failed(f"{op.collection}/{op.id} already exists")
    if op.if_match is not None and op.if_match != current.revision:
        raise precondition_failed(
            f"{op.collection}/{op.id} is at revision {current.revision}, not {op.if_match}"
        )
    prev_json = current.data_json
    if op.kind == "delete":
        return Change(
            revision,
            DELETED,
            op.collection,
            op.id,
            current.created_revision,
            prev_json,
            prev_json,
            ts,
        )
    if op.kind == "patch":
        assert op.patch is not None
        data = op.patch(current.data)
        if not isinstance(data, dict):
            raise Problem(422, "BadPatch", "the patch would make the resource something other than an object")
    else:
        data = op.data or {}
    if guard is not None:
        guard.new(data)
    return Change(
        revision,
        MODIFIED,
        op.collection,
        op.id,
        current.created_revision,
        _data_json(op, data),
        prev_json,
        ts,
    )


def apply_job(
    write_ops: list[WriteOp],
    revision: int,
    ts: float,
    stored: dict[tuple[str, str], Row],
    staged: dict[tuple[str, str], Change | None],
) -> tuple[list[Change], dict[tuple[str, str], Change | None]]:
    """A job's changes from `revision` + 1 on, and its writes by resource; raises (writing
    nothing) to refuse.

    `stored` holds the rows the group read, `staged` what the group's earlier jobs wrote. A
    resource written in a group is its last change (None: deleted): a Change carries what a Row
    does (revision, created_revision, data_json, data), decoded already.
    """
    changes = []
    # The job's own writes: a later op of a batch sees an earlier one's state.
    written: dict[tuple[str, str], Change | None] = {}
    for op in write_ops:
        revision += 1
        key = (op.collection, op.id)
        if key in written:
            current = written[key]
        elif key in staged:
            current = staged[key]
        else:
            current = stored.get(key)
        change = apply(op, current, revision, ts)
        written[key] = None if change.type == "DELETED" else change
        changes.append(change)
    return changes, written


def wanted(jobs_ops: Iterable[list[WriteOp]]) -> dict[str, list[str]]:
    """The ids each collection's current rows are needed for, each once, in first-seen order."""
    ids: dict[str, dict[str, None]] = {}
    for write_ops in jobs_ops:
        for op in write_ops:
            named = ids.get(op.collection)
            if named is None:
                named = ids[op.collection] = {}
            named[op.id] = None
    return {collection: list(named) for collection, named in ids.items()}


def encode_early(data: dict) -> bytes | None:
    """`data` encoded for `WriteOp.data_json`; None when it cannot be (the store then refuses it,
    after the checks that come first)."""
    try:
        return encode(data)
    except orjson.JSONEncodeError:
        return None


def _data_json(op: WriteOp, data: dict) -> bytes:
    return op.data_json if op.data_json is not None else _encode(data)


def _encode(data: dict) -> bytes:
    try:
        return encode(data)
    except orjson.JSONEncodeError as exc:
        # orjson reads 1024 levels of nesting but writes only 254: refuse what cannot be stored.
        raise Problem(422, "TooDeep", f"the resource cannot be stored: {exc}") from None
