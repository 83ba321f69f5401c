"""Per-document rules: which documents of a collection an identity may see and write.

A rule is a filter expression (the watch filter language) in which `$name` stands for the
identity's claim `name` (`$sub`, `$org`, `$tenant.id` for a nested claim). A claim is put in
as a JSON literal, never as text, so a subject like `x,owner!=y` cannot add a clause: it is one
quoted string. A list claim becomes a comma-separated list, for `in ($groups)`. A rule that
names a claim the identity does not have matches nothing: a missing claim must hide, not show.

Rules apply to everything: GET, lists, writes (the state before and after must both be
visible), and every watch, where the rule is ANDed with the watcher's own filter, so that the
watcher's membership logic makes a document that stops being visible arrive as DELETED.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from watchroute.core.filter import Filter, FilterError, compile_filter
from watchroute.security.grants import collection_matches

_CLAIM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
_MISSING = object()


class RuleError(ValueError):
    pass


class NothingFilter:
    """The rule of an identity that lacks a claim its rule names: no document is visible."""

    text = "<nothing>"
    equalities = ()

    def matches(self, data: object) -> bool:
        return False


NOTHING = NothingFilter()


@dataclass(frozen=True, slots=True)
class Restricted:
    """A watcher's filter ANDed with its rule: what `Watcher.classify` and lists match by."""

    rule: Filter | NothingFilter
    user: Filter | None

    @property
    def text(self) -> str:
        return self.user.text if self.user is not None else ""

    @property
    def equalities(self) -> tuple[tuple[str, object], ...]:
        return self.user.equalities if self.user is not None else ()

    def matches(self, data: object) -> bool:
        return self.rule.matches(data) and (self.user is None or self.user.matches(data))


def restrict(rule: Filter | NothingFilter | None, user: Filter | None) -> Any:
    """The filter a watch or list runs with: the user's, narrowed by the rule if there is one."""
    return user if rule is None else Restricted(rule, user)


class Rules:
    """The configured rules, in order: exact collection names first, then patterns as written."""

    def __init__(self, rules: dict[str, str], max_length: int = 4096, max_clauses: int = 64) -> None:
        self.max_length = max_length
        self.max_clauses = max_clauses
        exact = [(c, r) for c, r in rules.items() if "*" not in c]
        patterns = [(c, r) for c, r in rules.items() if "*" in c]
        self._rules = exact + patterns
        for collection, text in self._rules:
            if not isinstance(text, str):
                raise RuleError(f"the rule for {collection!r} must be a string")
            try:  # every claim as a string: the rule must compile with any scalar claim
                self._compile(_substitute(text, lambda _name: "x"))
            except FilterError as exc:
                raise RuleError(f"the rule for {collection!r} is not a valid filter: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self._rules)

    @classmethod
    def parse(cls, config: str, max_length: int = 4096, max_clauses: int = 64) -> Rules:
        """From the `rules` setting: a JSON object, or @FILE holding one."""
        if not config.strip():
            return cls({}, max_length, max_clauses)
        if config.startswith("@"):
            try:
                config = Path(config[1:]).read_text()
            except OSError as exc:
                raise RuleError(f"cannot read rules from {config[1:]}: {exc.strerror}") from None
        try:
            rules = orjson.loads(config)
        except orjson.JSONDecodeError as exc:
            raise RuleError(f"rules must be a JSON object: {exc}") from None
        if not isinstance(rules, dict):
            raise RuleError('rules must be a JSON object like {"notes": "owner=$sub"}')
        return cls(rules, max_length, max_clauses)

    def text_for(self, collection: str) -> str | None:
        for pattern, text in self._rules:
            if collection_matches(pattern, collection):
                return text
        return None

    def for_identity(self, collection: str, claims: dict[str, Any]) -> Filter | NothingFilter | None:
        """The rule for `collection` with the identity's claims put in; None when no rule applies."""
        text = self.text_for(collection)
        if text is None:
            return None
        missing = False

        def claim(name: str) -> str:
            nonlocal missing
            value = _claim(claims, name)
            if value is _MISSING or isinstance(value, dict) or (isinstance(value, list) and not value):
                missing = True
                return "x"
            if isinstance(value, list):
                if any(isinstance(v, dict | list) for v in value):
                    missing = True
                    return "x"
                return ",".join(orjson.dumps(v).decode() for v in value)
            return orjson.dumps(value).decode()

        expanded = _substitute(text, claim)
        if missing:
            return NOTHING
        try:
            return self._compile(expanded)
        except FilterError:
            return NOTHING  # a claim that does not fit where the rule puts it (a list outside `in`)

    def _compile(self, text: str) -> Filter:
        return _compiled(text, self.max_length * 4, self.max_clauses)


@lru_cache(maxsize=8192)
def _compiled(text: str, max_length: int, max_clauses: int) -> Filter:
    return compile_filter(text, max_length=max_length, max_clauses=max_clauses)


def _claim(claims: dict[str, Any], name: str) -> Any:
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _substitute(text: str, claim: Callable[[str], str]) -> str:
    """Replace each `$name` outside a quoted string by `claim(name)`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == '"':  # copy a quoted string whole: a `$` inside it is literal
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
            continue
        if c == "$":
            m = _CLAIM.match(text, i)
            if m is not None:
                out.append(claim(m.group(1)))
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)
