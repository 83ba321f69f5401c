"""What an inbound bridge writes for one broker message: its id, merge or put, or a delete.

A message names its resource by a segment of its topic (`topic:N`, counted from 0), a header
(`header:NAME`) or a member of its JSON body (`field:PATH`, dotted for nested objects). Its body
is the document: a JSON object, merged into the resource (RFC 7386, creating it when absent) or
put in its place. A message is a delete when it carries the bridge's delete marker: a header
(`header:NAME`, or `header:NAME=VALUE`), a member of the body (`field:PATH`: true, or
`field:PATH=VALUE`), or an empty body (`empty`, the tombstone of log-compacted topics). Anything
else is refused with a short reason (`Malformed`): the runner counts it, logs the reason (never
the body) and skips it or has the broker dead-letter it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from watchroute.bridges.base import Inbound
from watchroute.core.names import check_id
from watchroute.core.problems import Problem
from watchroute.store.base import WriteOp
from watchroute.store.ops import encode_early
from watchroute.wire.patches import merge_patch

# The character that splits each broker's subjects into the segments `topic:N` counts.
SEPARATORS = {"mqtt": "/", "nats": ".", "amqp": ".", "amqps": ".", "redis": ":", "rediss": ":"}


class Malformed(Exception):
    """A message the bridge cannot write; `reason` is a short label for counts and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Locator:
    """Where a message carries something: a topic segment, a header, or a body member."""

    kind: Literal["topic", "header", "field", "empty"]
    name: str = ""  # segment number, header name, or dotted path
    value: str | None = None  # for a delete marker: the value that marks it (None: any true)

    @classmethod
    def parse(cls, text: str, *, marker: bool = False) -> Locator:
        if marker and text == "empty":
            return cls("empty")
        kind, sep, rest = text.partition(":")
        value = None
        if marker and "=" in rest:
            rest, _, value = rest.partition("=")
        if not sep or not rest or kind not in ("topic", "header", "field") or (marker and kind == "topic"):
            allowed = (
                "header:NAME[=VALUE], field:PATH[=VALUE] or empty"
                if marker
                else ("topic:N, header:NAME or field:PATH")
            )
            raise ValueError(f"{text!r} must be {allowed}")
        if kind == "topic" and not rest.isdigit():
            raise ValueError(f"{text!r}: the segment of topic:N is a number, counted from 0")
        return cls(kind, rest, value)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Rules:
    """One inbound bridge's translation of messages into writes."""

    collection: str
    id: Locator
    put: bool  # True: the body replaces the resource; False: it is merged into it
    delete: Locator | None
    separator: str
    max_document_bytes: int

    @classmethod
    def of(cls, config: Any, max_document_bytes: int) -> Rules:
        scheme = config.url.partition("://")[0].lower()
        return cls(
            collection=config.collection,
            id=Locator.parse(config.id or ""),
            put=config.write == "put",
            delete=None if not config.delete else Locator.parse(config.delete, marker=True),
            separator=SEPARATORS.get(scheme, "."),
            max_document_bytes=max_document_bytes,
        )


def translate(message: Inbound, rules: Rules) -> WriteOp:
    """The write `message` asks for, without its schema check (the runner adds it); raises
    Malformed."""
    body = message.body
    if len(body) > rules.max_document_bytes:
        raise Malformed("too_large", f"{len(body)} bytes, more than max_document_bytes")
    needs_body = rules.id.kind == "field" or (rules.delete is not None and rules.delete.kind == "field")
    document = _parse(body) if body or needs_body else None
    deleting = _marked(message, document, rules.delete)
    if not deleting and document is None:
        document = _parse(body)  # an empty body that is no delete: "not JSON"
    id = _locate_id(message, document, rules)
    if deleting:
        return WriteOp("delete", rules.collection, id)
    assert document is not None
    if rules.put:
        return WriteOp("put", rules.collection, id, data=document, data_json=encode_early(document))
    return WriteOp("patch", rules.collection, id, patch=merge_patch(document), create_missing=True)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("not_json", "the body is not JSON") from None
    if not isinstance(document, dict):
        raise Malformed("not_object", "the body is JSON but not an object")
    return document


def _marked(message: Inbound, document: dict[str, Any] | None, marker: Locator | None) -> bool:
    if marker is None:
        return False
    if marker.kind == "empty":
        return not message.body
    if marker.kind == "header":
        found = message.headers.get(marker.name)
        if found is None:
            return False
        return marker.value is None or found == marker.value
    found = _member(document, marker.name)
    if marker.value is None:
        return found is True
    return found is not None and _text(found) == marker.value


def _locate_id(message: Inbound, document: dict[str, Any] | None, rules: Rules) -> str:
    where = rules.id
    if where.kind == "topic":
        segments = message.subject.split(rules.separator)
        index = int(where.name)
        found: Any = segments[index] if index < len(segments) else None
    elif where.kind == "header":
        found = message.headers.get(where.name)
    else:
        found = _member(document, where.name)
    if found is None or found == "":
        raise Malformed("no_id", f"no id at {where.kind}:{where.name}")
    if isinstance(found, bool) or not isinstance(found, str | int):
        raise Malformed("bad_id", f"the id at {where.kind}:{where.name} is not a string or an integer")
    try:
        return check_id(_text(found))
    except Problem as problem:
        raise Malformed("bad_id", problem.detail) from None


def _member(document: dict[str, Any] | None, path: str) -> Any:
    value: Any = document
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
