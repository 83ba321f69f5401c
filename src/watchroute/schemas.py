"""Collection schemas: a JSON Schema (2020-12) per collection, checked on every write to it.

A collection's schema is the resource `_schemas/{collection}`, written through the store like
any other resource, so it takes a revision, is kept in the log and can be watched. Each
instance keeps a `SchemaBook`: the compiled validator of every collection with a schema, keyed
by the schema's revision, so that a write pays the validation and nothing else; a collection
without a schema costs a write one dictionary look-up (docs/schemas.md).

Every create, put and patch carries the book's `check`, which the store runs inside the write's
transaction on the state the write leaves (`WriteOp.check`): a PATCH's result is checked, not
its body, against the schemas in force when the write is applied. Setting a schema first makes
every write to the collection answer to it as well (`tightened`), waits until every write
applied before has committed, and only then reads the existing documents: no write can slip
between the check of the documents and the schema taking force (docs/schemas.md, "Exactness").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import orjson

from watchroute.core.change import ADDED, DELETED, Change
from watchroute.core.problems import Problem
from watchroute.store.base import WriteOp

log = logging.getLogger("watchroute")

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS = "_schemas"  # the reserved collection: id = the collection a schema governs
MAX_ERRORS = 10  # errors listed in one refusal
MAX_OFFENDERS = 5  # documents listed when existing documents refuse a schema
# A schema's messages show where a value is wrong, never the value: the writer of a patch may
# not be allowed to read the document it patches (docs/security.md, "A write is not a way to read").
MASK = "(value)"
# How often each process reads what other processes have done to `_schemas` (in the window: a
# look at the changes committed meanwhile).
FOLLOW_SECONDS = 0.05
RETRY_SECONDS = 1.0  # after a failed read of them


def _no_remote(uri: str) -> Any:
    # A server must not fetch what a schema names: that would let a writer make it request any
    # address it can reach.
    raise ValueError(f"external references are not fetched ({uri}); put the definitions in $defs")


def compile_schema(schema: Any) -> Any:
    """A validator for `schema`; 422 `BadSchema` (the validator's message) when it is not a
    valid JSON Schema, or names something outside itself."""
    if not isinstance(schema, dict):
        raise Problem(422, "BadSchema", "a schema must be a JSON object")
    if "$schema" not in schema:  # the draft a schema names, 2020-12 when it names none
        schema = {"$schema": DRAFT_2020_12, **schema}
    try:
        return jsonschema_rs.validator_for(schema, retriever=_no_remote, mask=MASK)
    except jsonschema_rs.ValidationError as exc:
        where = "/" + "/".join(str(p) for p in exc.instance_path) if exc.instance_path else ""
        message = exc.message.split("\n", 1)[0]
        raise Problem(422, "BadSchema", f"the schema is not valid: {message}", pointer=where) from None
    except ValueError as exc:
        raise Problem(422, "BadSchema", f"the schema is not valid: {exc}") from None


def pointer(path: Any) -> str:
    """An error's instance path as a JSON pointer (RFC 6901)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def errors_of(validator: Any, data: dict[str, Any]) -> list[dict[str, str]]:
    """What is wrong with `data`, at most MAX_ERRORS: where (a JSON pointer into the document),
    which keyword of the schema refused it, and why."""
    found = []
    for error in validator.iter_errors(data):
        found.append(
            {
                "pointer": pointer(error.instance_path),
                "schema_pointer": pointer(error.schema_path),
                "message": error.message,
            }
        )
        if len(found) == MAX_ERRORS:
            break
    return found


def violation(collection: str, id: str, errors: list[dict[str, str]]) -> Problem:
    first = errors[0]
    where = first["pointer"] or "the document"
    return Problem(
        422,
        "SchemaViolation",
        f"{collection}/{id} does not match the schema of {collection}: {first['message']} at {where}",
        errors=errors,
    )


@dataclass(slots=True)
class Schema:
    """A collection's schema as committed: its revision, the document, its compiled validator."""

    revision: int
    document: dict[str, Any]
    validator: Any


class SchemaBook:
    """The schemas in force on this instance, by collection, and the checks writes carry."""

    def __init__(self) -> None:
        self._schemas: dict[str, Schema] = {}
        # The revision each collection's entry was last set or removed at: a change older than
        # what the book holds (read again from the log) must not undo a newer one.
        self._revisions: dict[str, int] = {}
        # Schemas being set: writes answer to them as well until they commit or are refused.
        self._pending: dict[str, Any] = {}
        self._setting: dict[str, asyncio.Lock] = {}
        self._governed: set[str] = set()  # collections with a schema or one being set
        self.version = 0  # moves with every change of what the book holds (documents cache on it)
        self._follower: asyncio.Task[None] | None = None
        self._failing = False

    # -- what a write carries ------------------------------------------------------------------

    def check(self, op: WriteOp, data: dict[str, Any] | None) -> None:
        """`WriteOp.check` of every create, put and patch: run by the store inside the write's
        transaction, so it answers to the schemas in force when the write commits, not when the
        request came in. A collection without a schema costs it one set look-up."""
        collection = op.collection
        if collection not in self._governed:
            return
        if data is None:
            data = orjson.loads(op.data_json) if op.data_json is not None else {}
        for validator in (self._schema_validator(collection), self._pending.get(collection)):
            if validator is not None and not validator.is_valid(data):
                raise violation(collection, op.id, errors_of(validator, data))

    def _schema_validator(self, collection: str) -> Any:
        schema = self._schemas.get(collection)
        return None if schema is None else schema.validator

    def _indexed(self, collection: str) -> None:
        if collection in self._schemas or collection in self._pending:
            self._governed.add(collection)
        else:
            self._governed.discard(collection)

    # -- what the book holds ---------------------------------------------------------------------

    def get(self, collection: str) -> Schema | None:
        return self._schemas.get(collection)

    def documents(self) -> dict[str, dict[str, Any]]:
        """Every collection's schema document, by collection name."""
        return {name: schema.document for name, schema in sorted(self._schemas.items())}

    def saw(self, change: Change) -> None:
        """Take a committed change of `_schemas` into the book (in any order, any number of times)."""
        if change.revision <= self._revisions.get(change.id, 0):
            return
        self._revisions[change.id] = change.revision
        if change.type == DELETED:
            self._schemas.pop(change.id, None)
        else:
            try:
                validator = compile_schema(change.data)
            except Problem as problem:  # checked when it was set: only a newer validator refuses it
                log.error("the schema of %s no longer compiles: %s", change.id, problem.detail)
                return
            self._schemas[change.id] = Schema(change.revision, change.data, validator)
        self._indexed(change.id)
        self.version += 1

    @contextlib.contextmanager
    def tightened(self, collection: str, validator: Any) -> Iterator[None]:
        """While a schema is being set: every write to `collection` made meanwhile answers to it too."""
        self._pending[collection] = validator
        self._indexed(collection)
        try:
            yield
        finally:
            del self._pending[collection]
            self._indexed(collection)

    def setting(self, collection: str) -> asyncio.Lock:
        """Held while a schema of `collection` is set or removed: one at a time per collection."""
        lock = self._setting.get(collection)
        if lock is None:
            lock = self._setting[collection] = asyncio.Lock()
        return lock

    # -- following the store --------------------------------------------------------------------

    async def start(self, runtime: Any) -> None:
        """Read the schemas the store holds, then follow `_schemas` for changes made elsewhere
        (other processes or instances on the same store)."""
        revision = await self._load(runtime.store)
        self._follower = asyncio.create_task(self._follow(runtime, revision), name="watchroute-schemas")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower

    async def _load(self, store: Any) -> int:
        """Read every schema the store holds; return the revision they were read at. A schema
        the book holds and the store no longer does was removed meanwhile (a reload after the
        book's cursor fell behind the history horizon)."""
        after: str | None = None
        first: int | None = None
        present: set[str] = set()
        while True:
            page = await store.list(SCHEMAS, None, 1000, after)
            first = page.revision if first is None else first
            for row in page.rows:
                present.add(row.id)
                self.saw(
                    Change(
                        row.revision, ADDED, SCHEMAS, row.id, row.created_revision, row.data_json, None, 0.0
                    )
                )
            if page.next_after_id is None:
                break
            after = page.next_after_id
        for gone in [
            c for c, schema in self._schemas.items() if c not in present and schema.revision <= first
        ]:
            self._schemas.pop(gone)
            self._revisions[gone] = first
            self._indexed(gone)
            self.version += 1
        return first

    async def _follow(self, runtime: Any, cursor: int) -> None:
        from watchroute.core.watcher import Watcher

        # A cursor read now and then, not a watch parked in the hub: it is no client's watch
        # (the watcher figures of /metrics are the clients'), and costs commits nothing.
        while True:
            watcher = Watcher(runtime.hub, runtime.window, runtime.store, SCHEMAS, None, None, cursor)
            try:
                while True:
                    for _, change in await watcher.next(64, 0):  # what is ready; never waits
                        self.saw(change)
                    self._failing = False
                    await asyncio.sleep(FOLLOW_SECONDS)
            except Problem as problem:
                if problem.status == 410:  # behind the history horizon: read them all again
                    cursor = await self._reload(runtime.store)
                    continue
                cursor = watcher.cursor
                self._failed(problem.detail)
            except Exception as exc:  # the store unreachable for a moment: again from there
                cursor = watcher.cursor
                self._failed(str(exc))
            await asyncio.sleep(RETRY_SECONDS)

    async def _reload(self, store: Any) -> int:
        while True:
            try:
                return await self._load(store)
            except Exception as exc:
                self._failed(str(exc))
                await asyncio.sleep(RETRY_SECONDS)

    def _failed(self, why: str) -> None:
        # Once per outage: a store that is away for minutes would otherwise log every second.
        if not self._failing:
            log.warning("the schemas could not be read (%s); trying again every second", why)
        self._failing = True
