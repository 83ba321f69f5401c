"""An inbound bridge's rules: which resource a message names, and what it writes there."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from watchroute.bridges.base import Inbound
from watchroute.bridges.translation import Malformed, Rules, translate
from watchroute.core.change import ADDED
from watchroute.store.ops import apply


def rules(**config: Any) -> Rules:
    defaults: dict[str, Any] = {"url": "mqtt://127.0.0.1:1883", "collection": "sensors", "id": "topic:1"}
    defaults.update(config)
    defaults.setdefault("write", "merge")
    defaults.setdefault("delete", None)
    return Rules.of(SimpleNamespace(**defaults), max_document_bytes=1000)


def message(body: bytes, subject: str = "sensors/s1/reading", **headers: str) -> Inbound:
    return Inbound(body, subject, headers, None, None, None)


def test_topic_segment_header_and_field_name_the_resource() -> None:
    assert translate(message(b'{"t": 1}'), rules()).id == "s1"
    assert translate(message(b'{"t": 1}', subject="a.b.c"), rules(url="nats://x", id="topic:2")).id == "c"
    assert translate(message(b"{}", key="k-9"), rules(id="header:key")).id == "k-9"
    assert translate(message(b'{"meta": {"id": 42}}'), rules(id="field:meta.id")).id == "42"


def test_a_merge_creates_what_is_absent_and_a_put_replaces() -> None:
    op = translate(message(b'{"t": 21, "gone": null}'), rules())
    assert op.kind == "patch"
    change = apply(op, None, 7, 0.0)
    assert change.type == ADDED and change.data == {"t": 21}
    put = translate(message(b'{"t": 22}'), rules(write="put"))
    assert (put.kind, put.data) == ("put", {"t": 22})


@pytest.mark.parametrize(
    ("marker", "msg", "deletes"),
    [
        ("header:op=delete", message(b"", op="delete"), True),
        ("header:op=delete", message(b"{}", op="update"), False),
        ("header:tombstone", message(b"", tombstone="1"), True),
        ("field:deleted", message(b'{"deleted": true}'), True),
        ("field:deleted", message(b'{"deleted": false}'), False),
        ("field:op=remove", message(b'{"op": "remove"}'), True),
        ("empty", message(b""), True),
        ("empty", message(b"{}"), False),
    ],
)
def test_delete_markers(marker: str, msg: Inbound, deletes: bool) -> None:
    assert (translate(msg, rules(delete=marker)).kind == "delete") is deletes


@pytest.mark.parametrize(
    ("msg", "config", "reason"),
    [
        (message(b"not json"), {}, "not_json"),
        (message(b"[1, 2]"), {}, "not_object"),
        (message(b""), {}, "not_json"),
        (message(b"{}", subject="sensors"), {}, "no_id"),
        (message(b"{}"), {"id": "header:key"}, "no_id"),
        (message(b'{"id": {"a": 1}}'), {"id": "field:id"}, "bad_id"),
        (message(b'{"id": "has space"}'), {"id": "field:id"}, "bad_id"),
        (message(b'{"x": "' + b"a" * 2000 + b'"}'), {}, "too_large"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(msg: Inbound, config: dict, reason: str) -> None:
    with pytest.raises(Malformed) as refused:
        translate(msg, rules(**config))
    assert refused.value.reason == reason


@pytest.mark.parametrize("bad", ["topic:x", "segment:1", "topic:", "header"])
def test_bad_id_rules_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        rules(id=bad)
