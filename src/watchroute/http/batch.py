"""`POST /v1/_batch`: several writes, all or nothing, on consecutive revisions."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from watchroute.capture import captured_collection
from watchroute.core.names import check_collection, check_id, new_id
from watchroute.core.problems import Problem, bad_request
from watchroute.core.revisions import parse_revision
from watchroute.http.bodies import json_kind, read_object
from watchroute.http.models import PROBLEMS, BatchResult
from watchroute.http.table import Route
from watchroute.leases import parse_ttl
from watchroute.security.identity import identity_of
from watchroute.store import WriteOp
from watchroute.store.ops import encode_early
from watchroute.wire.events import expiry_text
from watchroute.wire.patches import json_patch, merge_patch, reads_document

MAX_BATCH_OPS = 10_000
OP_KINDS = ("create", "put", "patch", "delete")


def parse_op(index: int, raw: Any, max_ttl: float) -> WriteOp:
    where = f"ops[{index}]"
    if not isinstance(raw, dict):
        raise bad_request("BadBatch", f"{where} must be an object, not {json_kind(raw)}")
    kind = raw.get("op")
    if kind not in OP_KINDS:
        raise bad_request("BadBatch", f"{where}.op must be one of {', '.join(OP_KINDS)}")
    collection = raw.get("collection")
    if not isinstance(collection, str):
        raise bad_request("BadBatch", f"{where}.collection must be a string")
    check_collection(collection)
    raw_id = raw.get("id")
    id = check_id(new_id() if raw_id is None and kind == "create" else raw_id)
    if_match = raw.get("if_match")
    if if_match is not None:
        if_match = parse_revision(if_match, f"{where}.if_match", reason="BadBatch", text=False)
    op = WriteOp(kind, collection, id, if_match=if_match, must_not_exist=kind == "create")
    ttl = raw.get("ttl")
    if ttl is not None:
        if kind == "delete":
            raise bad_request("BadTTL", f"{where}: a delete takes no ttl")
        op.ttl = parse_ttl(ttl, max_ttl, f"{where}.ttl")
    if kind in ("create", "put"):
        data = raw.get("data")
        if not isinstance(data, dict):
            raise bad_request("BadBatch", f"{where}.data must be a JSON object")
        op.data = data
        op.data_json = encode_early(data)  # here, while the parsed document is still in cache
    elif kind == "patch":
        document = raw.get("patch")
        op.patch = json_patch(document) if isinstance(document, list) else merge_patch(document)
    return op


async def batch(request: Request) -> Response:
    runtime = request.app.state.runtime
    document = await read_object(request, runtime.settings.max_body_bytes)
    raw_ops = document.get("ops")
    if not isinstance(raw_ops, list) or not raw_ops:
        raise bad_request("BadBatch", 'the body must be {"ops": [...]} with at least one op')
    if len(raw_ops) > MAX_BATCH_OPS:
        raise bad_request("BadBatch", f"a batch takes at most {MAX_BATCH_OPS} ops")
    ops = []
    identity = identity_of(request)
    security = runtime.security
    check = runtime.schemas.check
    # Collections whose writes this caller may make without a rule to check: whether a guard is
    # needed depends on the collection alone, so it is asked once per collection, not per op.
    unguarded: set[str] = set()
    # Whether the answer may show each collection's documents (asked once each, as above): the
    # results of a collection the caller may write but not read carry no `data`.
    shown: dict[str, bool] = {}
    for index, raw in enumerate(raw_ops):
        try:
            op = parse_op(index, raw, runtime.settings.max_ttl_seconds)
            if op.collection in runtime.captured:
                raise captured_collection(op.collection)
            # Each op is checked as the same write on its own route would be (grant and rule).
            if op.collection not in unguarded:
                op.guard = security.write_guard(identity, op.kind, op.collection, op.id)
                if op.guard is None:
                    unguarded.add(op.collection)
            if op.collection not in shown:
                shown[op.collection] = security.may_read(identity, op.collection)
            if op.kind != "delete":
                op.check = check
            if op.kind == "patch" and reads_document(raw.get("patch")):
                security.authorize(identity, "read", op.collection)  # a `test` op is a read
            if op.guard is None and op.data_json is not None:
                op.data = None  # encoded, and no rule will read it: see below
            ops.append(op)
        except Problem as problem:
            problem.extra["op_index"] = index
            raise
    # The parsed body is not needed past this point. Let go now, its thousands of objects are
    # freed at once; kept alive through the commit, they would be scanned by every collection
    # of the garbage collector meanwhile and moved into its older generations, to be scanned
    # there again: about a tenth of the server's CPU per batched write.
    del document, raw_ops, raw
    try:
        changes = await runtime.store.write(ops)
    except Problem as problem:
        # A refusal inside the transaction (If-Match, absent, patch): name the op, as parsing does.
        refused = problem.op
        for index, op in enumerate(ops):
            if op is refused:
                problem.extra["op_index"] = index
        raise
    # One encoder call for the whole answer (a tenth of the time of one per resource); each
    # resource is the same JSON its own route answers (`resource_json`, or `written_json`).
    results = [
        {
            "id": c.id,
            "revision": c.revision,
            "created_revision": c.created_revision,
            "data": orjson.Fragment(c.data_json),
        }
        for c in changes
    ]
    for result, change in zip(results, changes, strict=True):
        if change.expires_at is not None:
            result["expires_at"] = expiry_text(change.expires_at).decode()
    if not all(shown.values()):
        for result, change in zip(results, changes, strict=True):
            if not shown[change.collection]:
                del result["data"]
    body = orjson.dumps({"revision": changes[-1].revision, "results": results})
    return Response(body, media_type="application/json")


ROUTES = [
    Route(
        "POST",
        "/v1/_batch",
        batch,
        "Apply several writes atomically",
        ("batch",),
        response_model=BatchResult,
        responses=PROBLEMS,
        request_body={
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}},
        },
    )
]
