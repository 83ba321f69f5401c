"""Filter expressions of the watch API (``?filter=...``).

Grammar (whitespace `` \\t\\r\\n`` is allowed around every token)::

    expr    := clause ("," clause)*                 -- all clauses must hold
    clause  := path OP value
             | path ("in" | "notin") "(" value ("," value)* ")"
             | path                                 -- field exists
             | "!" path                             -- field absent
    OP      := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
    path    := segment ("." segment)*               -- addresses the resource's ``data``
    segment := [A-Za-z_][A-Za-z0-9_-]*
    value   := JSON string ("..." with JSON escapes)
             | bare word [A-Za-z0-9_.:@/+-]+

A bare word that is exactly a JSON number is a number (``int`` if it has no
fraction/exponent, else ``float``); exactly ``true``/``false``/``null`` are the
JSON literals (case-sensitive); any other bare word is a string. So ``01``,
``+1``, ``1.`` and ``True`` are strings. Quote a value to force a string
(``"123"``).

Decisions:

* Paths address dict keys only; list indexes (``items.0``) are NOT supported,
  and segments cannot start with a digit. A non-dict intermediate value (list,
  string, ...) makes the path missing, as does non-dict ``data``.
* Kinds are: number (int/float, never bool), string, bool, null, other
  (object/array). ``=``/``==``/``in`` hold only for the same kind and equal
  value: ``1 = 1.0`` holds, ``true = 1`` does not, ``null`` equals only a
  present JSON null, objects/arrays never equal anything.
* ``!=`` is exactly ``not =`` and ``notin`` exactly ``not in``: a type
  mismatch makes ``!=`` true (the values are not equal), as does a missing
  field. The spec's "a type mismatch is false" applies to ``=``, ``in`` and
  the ordering operators.
* ``< <= > >=`` hold only between two numbers (numerically) or two strings
  (by code point); anything else, a missing field, or a ``true``/``false``/
  ``null`` operand, is false.
* ``path`` (exists) is true when the key is present, even if its value is null.
* Quoted strings must be valid JSON strings; lone surrogates are rejected.
* Errors: :class:`FilterError` with a 0-based character ``position``; too long
  input reports ``position == max_length``; too many clauses reports the start
  of the first clause over the limit.

Compilation yields, per clause, a (getter, test) pair of closures; matching does
no parsing, regex or allocation beyond the dict lookups.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = ["Filter", "FilterError", "compile_filter"]

Value = str | int | float | bool | None
_Getter = Callable[[object], object]
_Test = Callable[[object], bool]
# Ordering operands are narrowed to two strings or two numbers (``_order_test``) before
# the call, which no ``object``-typed signature can say.
_Compare = Callable[[Any, Any], bool]


_MISSING = object()  # sentinel returned by getters for absent paths
_WS = frozenset(" \t\r\n")
_NUM = (int, float)
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_BARE = re.compile(r"[A-Za-z0-9_.:@/+-]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_LITERALS: dict[str, Value] = {"true": True, "false": False, "null": None}
_OPS = ("==", "!=", "<=", ">=", "=", "<", ">")  # longest first
_absent: _Test = partial(operator.is_, _MISSING)
_present: _Test = partial(operator.is_not, _MISSING)
_ORDER: dict[str, _Compare] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class FilterError(ValueError):
    """A malformed filter expression (HTTP 400 ``BadFilter``)."""

    position: int
    message: str

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.message = message
        self.position = position

    def __reduce__(self) -> tuple[type[FilterError], tuple[str, int]]:
        return (FilterError, (self.message, self.position))


@dataclass(frozen=True)
class Filter:
    """A compiled filter; build it with :func:`compile_filter`."""

    text: str
    equalities: tuple[tuple[str, object], ...] = ()
    _clauses: tuple[tuple[_Getter, _Test], ...] = field(default=(), repr=False, compare=False)

    def matches(self, data: object) -> bool:
        """True when every clause holds for ``data``; never raises."""
        try:
            for get, test in self._clauses:
                if not test(get(data)):
                    return False
        except Exception:  # defensive: exotic data must not break the event loop
            return False
        return True


def _is_num(v: object) -> bool:
    return isinstance(v, _NUM) and not isinstance(v, bool)


def _getter(segments: tuple[str, ...]) -> _Getter:
    if len(segments) == 1:
        key = segments[0]

        def get_one(data: object) -> object:
            return data.get(key, _MISSING) if isinstance(data, dict) else _MISSING

        return get_one

    def get_path(data: object) -> object:
        for k in segments:
            if not isinstance(data, dict):
                return _MISSING
            data = data.get(k, _MISSING)
        return data

    return get_path


def _eq_test(lit: Value) -> _Test:
    if lit is None or isinstance(lit, bool):
        return lambda v: v is lit
    if isinstance(lit, str):
        return lambda v: isinstance(v, str) and v == lit
    return lambda v: isinstance(v, _NUM) and not isinstance(v, bool) and v == lit


def _in_test(values: list[Value]) -> _Test:
    strs = frozenset(v for v in values if isinstance(v, str))
    nums = frozenset(v for v in values if _is_num(v))
    flags = frozenset(v for v in values if isinstance(v, bool))
    has_null = None in values

    def test(v: object) -> bool:
        if isinstance(v, str):
            return v in strs
        if isinstance(v, bool):
            return v in flags
        if isinstance(v, _NUM):
            return v in nums
        return v is None and has_null

    return test


def _order_test(cmp: _Compare, lit: Value) -> _Test:
    if isinstance(lit, str):
        return lambda v: isinstance(v, str) and cmp(v, lit)
    if _is_num(lit):
        return lambda v: isinstance(v, _NUM) and not isinstance(v, bool) and cmp(v, lit)
    return lambda v: False


def _negate(test: _Test) -> _Test:
    return lambda v: not test(v)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        self.pos = pos

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def path(self, what: str) -> tuple[str, ...]:
        segments: list[str] = []
        while True:
            m = _SEGMENT.match(self.text, self.pos)
            if m is None:
                raise FilterError(what, self.pos)
            segments.append(m.group())
            self.pos = m.end()
            if self.peek() != ".":
                return tuple(segments)
            self.pos += 1
            what = "expected a path segment after '.'"

    def operator(self, path: str) -> str:
        for op in _OPS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        m = _SEGMENT.match(self.text, self.pos)
        if m is not None and m.group() in ("in", "notin"):
            self.pos = m.end()
            return m.group()
        raise FilterError(f"expected an operator after {path!r}", self.pos)

    def value(self, after: str) -> Value:
        self.skip_ws()
        start = self.pos
        if self.peek() == '"':
            return self.string()
        m = _BARE.match(self.text, start)
        if m is None:
            raise FilterError(f"expected a value after {after!r}", start)
        word = m.group()
        self.pos = m.end()
        if word in _LITERALS:
            return _LITERALS[word]
        num = _NUMBER.fullmatch(word)
        if num is None:
            return word
        if num.group(1) is None and num.group(2) is None:
            try:
                return int(word)
            except ValueError:  # beyond sys.get_int_max_str_digits()
                raise FilterError("number too large", start) from None
        return float(word)

    def string(self) -> str:
        text, start = self.text, self.pos
        i = start + 1
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise FilterError("unterminated string", start)
        try:
            value: str = json.loads(text[start : i + 1])
            value.encode("utf-8")
        except json.JSONDecodeError as exc:
            raise FilterError(f"invalid string: {exc.msg}", start + exc.pos) from None
        except UnicodeEncodeError:
            raise FilterError("invalid string: lone surrogate", start) from None
        self.pos = i + 1
        return value

    def value_list(self, keyword: str) -> list[Value]:
        self.skip_ws()
        if self.peek() != "(":
            raise FilterError(f"expected '(' after {keyword!r}", self.pos)
        self.pos += 1
        self.skip_ws()
        if self.peek() == ")":
            raise FilterError(f"empty value list after {keyword!r}", self.pos)
        values, after = [], "("
        while True:
            values.append(self.value(after))
            self.skip_ws()
            c = self.peek()
            self.pos += 1
            if c == ")":
                return values
            if c != ",":
                raise FilterError("expected ',' or ')' in value list", self.pos - 1)
            after = ","

    def clause(self) -> tuple[_Getter, _Test, tuple[str, Value] | None]:
        if self.peek() == "!":
            self.pos += 1
            self.skip_ws()
            return _getter(self.path("expected a path after '!'")), _absent, None
        segments = self.path("expected a path")
        path, get = ".".join(segments), _getter(segments)
        self.skip_ws()
        if self.peek() in ("", ","):
            return get, _present, None
        op = self.operator(path)
        if op in ("in", "notin"):
            test = _in_test(self.value_list(op))
            return get, (test if op == "in" else _negate(test)), None
        value = self.value(op)
        if op in ("=", "=="):
            return get, _eq_test(value), (path, value)
        if op == "!=":
            return get, _negate(_eq_test(value)), None
        return get, _order_test(_ORDER[op], value), None


def compile_filter(text: str, *, max_length: int = 4096, max_clauses: int = 64) -> Filter:
    """Parse and compile ``text``; raise :class:`FilterError` if it is malformed."""
    if len(text) > max_length:
        raise FilterError(f"filter expression longer than {max_length} characters", max_length)
    p = _Parser(text)
    p.skip_ws()
    if p.pos == len(text):
        raise FilterError("empty filter expression", p.pos)
    clauses: list[tuple[_Getter, _Test]] = []
    equalities: list[tuple[str, object]] = []
    while True:
        if len(clauses) >= max_clauses:
            raise FilterError(f"too many clauses (max {max_clauses})", p.pos)
        get, test, equality = p.clause()
        clauses.append((get, test))
        if equality is not None:
            equalities.append(equality)
        p.skip_ws()
        if p.pos == len(text):
            return Filter(text, tuple(equalities), tuple(clauses))
        if text[p.pos] != ",":
            raise FilterError("expected ',' or end of expression", p.pos)
        p.pos += 1
        p.skip_ws()
