"""The small parts of security/, in process: rates, grants, rule substitution, the warning."""

from __future__ import annotations

import logging

import pytest

from watchroute import Settings, create_app
from watchroute.security.grants import allows, scopes_of
from watchroute.security.install import exposure_warning
from watchroute.security.limits import LocalBuckets, parse_rate
from watchroute.security.rules import NOTHING, RuleError, Rules


def test_rates() -> None:
    assert parse_rate("") is None and parse_rate("0") is None
    rate = parse_rate("100/10s")
    assert rate is not None and rate.capacity == 100 and rate.per_second == 10
    assert parse_rate("600/m").per_second == 10  # type: ignore[union-attr]
    for bad in ("x", "10", "-1/s", "10/0s", "10/y"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    buckets, three = LocalBuckets(), parse_rate("3/h")
    assert three is not None
    assert [buckets.take("k", three) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert 1000 < buckets.take("k", three) <= 1200  # a token every 20 minutes
    assert buckets.take("other", three) == 0.0


def test_grants() -> None:
    scopes = scopes_of({"scope": "read:notes write:chat-* watch:*", "scp": ["read:x"]})
    assert allows(scopes, "read", "notes") and allows(scopes, "read", "x")
    assert not allows(scopes, "read", "notes2") and not allows(scopes, "write", "notes")
    assert allows(scopes, "write", "chat-1") and not allows(scopes, "write", "chat")
    assert allows(scopes, "watch", "anything")
    assert not allows(frozenset({"read:n.*"}), "read", "nx")  # only * is special


def test_rules_put_claims_in_as_values() -> None:
    rules = Rules.parse(
        '{"notes": "owner=$sub", "t-*": "team in ($teams), tag=\\"$sub\\"", "o": "org.id=$org.id"}'
    )
    notes = rules.for_identity("notes", {"sub": 'a,owner!=b"'})
    assert notes is not None and notes is not NOTHING
    assert notes.matches({"owner": 'a,owner!=b"'}) and not notes.matches({"owner": "b"})
    team = rules.for_identity("t-1", {"sub": "s", "teams": ["red", 7]})
    assert team is not None
    assert team.matches({"team": 7, "tag": "$sub"})  # a quoted $sub is literal text
    assert not team.matches({"team": "blue", "tag": "$sub"})
    assert rules.for_identity("t-1", {"sub": "s", "teams": []}) is NOTHING
    assert rules.for_identity("notes", {}) is NOTHING
    org = rules.for_identity("o", {"org": {"id": 3}})
    assert org is not None and org.matches({"org": {"id": 3}})
    assert rules.for_identity("other", {"sub": "s"}) is None
    with pytest.raises(RuleError):
        Rules.parse('{"notes": "owner="}')
    with pytest.raises(RuleError):
        Rules.parse("[1]")


def test_exposure_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert exposure_warning(Settings()) is None
    assert exposure_warning(Settings(host="::1")) is None
    assert "WITHOUT AUTHENTICATION" in (exposure_warning(Settings(host="0.0.0.0")) or "")
    assert exposure_warning(Settings(host="0.0.0.0", auth="jwt", jwt_secret="x" * 32)) is None
    with caplog.at_level(logging.WARNING, logger="watchroute"):
        create_app(Settings(host="0.0.0.0", database="sqlite:///./unused.db"))
    assert "WITHOUT AUTHENTICATION" in caplog.text
