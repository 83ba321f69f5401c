"""What one write does to one resource, the same for every engine.

The engine reads the current row inside its transaction, calls `apply`, and writes what comes
back; every refusal is a Problem raised before anything is written. The current state is a stored
Row, or the Change an earlier write of the same transaction made (both carry revision,
created_revision, data_json and data).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterable
from typing import Any

import orjson

from watchroute.core.change import ADDED, DELETED, MODIFIED, Change, encode
from watchroute.core.problems import Problem, document_too_large, not_found, precondition_failed
from watchroute.store.base import Position, Row, WriteOp
from watchroute.store.figures import WriteFigures

# The largest document (its JSON) a write may leave, and what the documents of one job of
# several ops may hold in all, unless the store is told otherwise.
MAX_DOCUMENT_BYTES = 1 << 20
MAX_BATCH_BYTES = 8 << 20


def apply(
    op: WriteOp,
    current: Row | Change | None,
    revision: int,
    ts: float,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Change:
    """The change `op` makes at `revision`, given the resource's current row."""
    try:
        return _apply(op, current, revision, ts, max_document_bytes)
    except Problem as problem:
        # The refused op itself, so that a batch can say which of its ops it was (`op_index`).
        problem.op = op
        raise


def _apply(op: WriteOp, current: Row | Change | None, revision: int, ts: float, max_bytes: int) -> Change:
    guard = op.guard
    # First: a document the writer may not see is, to the writer, absent, whatever the request
    # (its revision must not leak through a 412, nor its existence through a 403).
    hidden = guard is not None and current is not None and not guard.current(current.data)
    if op.lapsed_at is not None and (current is None or current.expires_at != op.lapsed_at):
        raise Problem(409, "LeaseRenewed", f"{op.collection}/{op.id} is no longer the lapsed lease")
    if current is None or hidden:
        created = None
        if op.kind == "patch" and op.create_missing:
            assert op.patch is not None
            created = op.patch(_NOTHING, max_bytes)
            if not isinstance(created, dict):
                raise Problem(422, "BadPatch", "the patch would make the resource no object")
        elif op.kind in ("patch", "delete"):
            raise not_found(op.collection, op.id)
        if op.if_match is not None or op.must_exist:
            raise precondition_failed(f"{op.collection}/{op.id} does not exist")
        if op.check is not None:
            op.check(op, op.data if created is None else created)
        data = (op.data or {}) if created is None else created
        if guard is not None:
            guard.new(data)
            if hidden:
                # The one answer that cannot be an absent id's: the creation it would be. It is
                # refused as a creation the rule forbids is (docs/security.md, "Writes").
                raise guard.violation()
        return Change(
            revision,
            ADDED,
            op.collection,
            op.id,
            revision,
            _data_json(op, data, max_bytes),
            None,
            ts,
            expires_at=_expiry(op, ts),
        )

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
            expires_at=op.lapsed_at,  # set: the lease lapsed, and the event says `expired`
        )
    if op.kind == "patch":
        assert op.patch is not None
        data = op.patch(current, max_bytes)
        if not isinstance(data, dict):
            raise Problem(422, "BadPatch", "the patch would make the resource something other than an object")
        if op.check is not None:
            op.check(op, data)
    else:
        if op.check is not None:
            op.check(op, op.data)  # None when a batch let it go (the check reads `data_json`)
        data = op.data or {}
    if guard is not None:
        guard.new(data)
    return Change(
        revision,
        MODIFIED,
        op.collection,
        op.id,
        current.created_revision,
        _data_json(op, data, max_bytes),
        prev_json,
        ts,
        expires_at=_expiry(op, ts),
    )


class _Nothing:
    """What a patch that creates its resource applies to: an empty object."""

    data: dict[str, Any] = {}  # read only: a merge copies what it changes
    data_json = b"{}"


_NOTHING = _Nothing()


def _expiry(op: WriteOp, ts: float) -> float | None:
    # From the commit's own time: a renewal counts from when it takes effect.
    return None if op.ttl is None else ts + op.ttl


def batch_too_large(op: WriteOp, max_bytes: int) -> Problem:
    problem = Problem(
        413,
        "BatchTooLarge",
        f"the documents this batch would leave hold more than {max_bytes} bytes in all "
        "(max_batch_bytes); split it",
    )
    problem.op = op
    return problem


def apply_job(
    write_ops: list[WriteOp],
    revision: int,
    ts: float,
    stored: dict[tuple[str, str], Row],
    staged: dict[tuple[str, str], Change | None],
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
    max_batch_bytes: int = MAX_BATCH_BYTES,
) -> tuple[list[Change], dict[tuple[str, str], Change | None]]:
    """A job's changes from `revision` + 1 on, and its writes by resource; raises (writing
    nothing) to refuse.

    `stored` holds the rows the group read, `staged` what the group's earlier jobs wrote. A
    resource written in a group is its last change (None: deleted): a Change carries what a Row
    does (revision, created_revision, data_json, data), decoded already.
    """
    changes: list[Change] = []
    # The job's own writes: a later op of a batch sees an earlier one's state.
    written: dict[tuple[str, str], Change | None] = {}
    left = max_batch_bytes
    for op in write_ops:
        revision += 1
        key = (op.collection, op.id)
        current: Row | Change | None
        if key in written:
            current = written[key]
        elif key in staged:
            current = staged[key]
        else:
            current = stored.get(key)
        change = apply(op, current, revision, ts, max_document_bytes)
        if change.type != "DELETED" and len(write_ops) > 1:
            # A batch's ops each write their document again (the log keeps every revision):
            # what they leave is counted, so that patches of a few bytes cannot make a
            # transaction of gigabytes.
            left -= len(change.data_json)
            if left < 0:
                raise batch_too_large(op, max_batch_bytes)
        written[key] = None if change.type == "DELETED" else change
        changes.append(change)
    return changes, written


# How many jobs one group commit takes at most.
MAX_JOBS_PER_COMMIT = 1024
# A job that writes nothing: read what the other writers (processes, instances) committed.
CATCH_UP: Any = object()


def take_group(waiting: queue.SimpleQueue[Any]) -> tuple[list[WriteJob], bool, bool]:
    """On an engine's writer thread: the next group, the first job waiting (waited for) and
    those queued behind it, up to MAX_JOBS_PER_COMMIT. Also whether a catch-up was asked for
    among them (CATCH_UP, left out of the jobs), and whether the writer was told to stop (None:
    what was taken before it is still to be done)."""
    taken = [waiting.get()]
    while taken[-1] is not None and len(taken) < MAX_JOBS_PER_COMMIT:
        try:
            taken.append(waiting.get_nowait())
        except queue.Empty:
            break
    stop = taken[-1] is None
    if stop:
        taken.pop()
    jobs = [job for job in taken if job is not CATCH_UP]
    return jobs, len(jobs) != len(taken), stop


def log_row(c: Change) -> tuple[Any, ...]:
    """A change as both engines' log tables hold it: revision, ts, type, collection, id,
    created_revision, data, prev, expires_at."""
    return (
        c.revision,
        c.ts,
        c.type,
        c.collection,
        c.id,
        c.created_revision,
        c.data_json,
        c.prev_json,
        c.expires_at,
    )


class WriteJob:
    """One `write` call on its way through an engine's group-commit writer."""

    __slots__ = ("future", "ops", "position", "queued")

    def __init__(
        self, ops: list[WriteOp], future: asyncio.Future[list[Change]], position: Position | None = None
    ) -> None:
        self.ops = ops
        self.future = future
        self.queued = WriteFigures.now()
        self.position = position  # stored with the job's changes, if it commits


def positions_of(jobs: list[WriteJob], outcomes: list[list[Change] | BaseException]) -> dict[str, str]:
    """The positions a group stores: in commit order, each name keeps the last value its
    committed jobs carried."""
    return {
        job.position[0]: job.position[1]
        for job, outcome in zip(jobs, outcomes, strict=True)
        if job.position is not None and isinstance(outcome, list)
    }


def answer(
    futures: Iterable[asyncio.Future[list[Change]]], outcomes: list[list[Change] | BaseException]
) -> None:
    """Each writer its job's changes, or what refused it (a future already given up is skipped)."""
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


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


def encode_early(data: dict[str, Any]) -> bytes | None:
    """`data` encoded for `WriteOp.data_json`; None when it cannot be (the store then refuses it,
    after the checks that come first)."""
    try:
        return encode(data)
    except orjson.JSONEncodeError:
        return None


def _data_json(op: WriteOp, data: dict[str, Any], max_bytes: int) -> bytes:
    data_json = op.data_json if op.data_json is not None else _encode(data)
    if len(data_json) > max_bytes:
        raise document_too_large(max_bytes, len(data_json))
    return data_json


def _encode(data: dict[str, Any]) -> bytes:
    try:
        return encode(data)
    except orjson.JSONEncodeError as exc:
        # orjson reads 1024 levels of nesting but writes only 254: refuse what cannot be stored.
        raise Problem(422, "TooDeep", f"the resource cannot be stored: {exc}") from None
