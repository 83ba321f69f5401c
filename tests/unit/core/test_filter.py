from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchroute.core.filter import Filter, FilterError, compile_filter


def m(expr: str, data: object) -> bool:
    return compile_filter(expr).matches(data)


# --- operators ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("price = 5", True),
        ("price == 5", True),
        ("price = 6", False),
        ("price != 6", True),
        ("price != 5", False),
        ("price < 6", True),
        ("price < 5", False),
        ("price <= 5", True),
        ("price <= 4", False),
        ("price > 4", True),
        ("price > 5", False),
        ("price >= 5", True),
        ("price >= 6", False),
        ("price in (1, 5, 9)", True),
        ("price in (1, 9)", False),
        ("price notin (1, 9)", True),
        ("price notin (5)", False),
        ("price", True),
        ("!price", False),
        ("volume", False),
        ("!volume", True),
    ],
)
def test_each_operator(expr: str, expected: bool) -> None:
    assert m(expr, {"price": 5}) is expected


def test_all_clauses_must_hold() -> None:
    f = compile_filter("symbol = AAPL, price > 100")
    assert f.matches({"symbol": "AAPL", "price": 150})
    assert not f.matches({"symbol": "AAPL", "price": 50})
    assert not f.matches({"symbol": "MSFT", "price": 150})


def test_whitespace_everywhere() -> None:
    f = compile_filter(" \t a\n=\r1 ,  ! b ,c  in  (  2 ,3 ) , d notin(4)  ")
    assert f.matches({"a": 1, "c": 3})
    assert not f.matches({"a": 1, "b": 0, "c": 3})
    assert m("a=1,b!=2,c<=3,d>=4", {"a": 1, "c": 3, "d": 4})
    assert m("x in(1)", {"x": 1})


# --- values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("-3", -3),
        ("1.5", 1.5),
        ("-0.25", -0.25),
        ("1e3", 1000.0),
        ("1.5E-2", 0.015),
        ("2e+2", 200.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ("AAPL", "AAPL"),
        ("hello-world", "hello-world"),
        ("user@example.com", "user@example.com"),
        ("2024-01-01T10:00:00", "2024-01-01T10:00:00"),
        ("a/b:c+d_e.f", "a/b:c+d_e.f"),
        ("01", "01"),
        ("+1", "+1"),
        ("1.", "1."),
        (".5", ".5"),
        ("-", "-"),
        ("True", "True"),
        ("NULL", "NULL"),
        ('"123"', "123"),
        ('"true"', "true"),
        ('"x,y (z)"', "x,y (z)"),
        ('"a\\"b\\\\c\\n\\u00e9\\ud83d\\ude00"', 'a"b\\c\n\u00e9\U0001f600'),
        ('""', ""),
    ],
)
def test_value_parsing(literal: str, value: object) -> None:
    (eq,) = compile_filter(f"v = {literal}").equalities
    assert eq == ("v", value)
    assert type(eq[1]) is type(value)


def test_int_and_float_types() -> None:
    assert compile_filter("a = 1").equalities == (("a", 1),)
    assert type(compile_filter("a = 1").equalities[0][1]) is int
    assert type(compile_filter("a = 1.0").equalities[0][1]) is float


def test_numbers_compare_numerically() -> None:
    assert m("a = 1", {"a": 1.0})
    assert m("a = 1.0", {"a": 1})
    assert m("a = 1e2", {"a": 100})
    assert m("a > -1e-3", {"a": 0})
    assert m("a < 10", {"a": 9.999})
    assert not m("a < 10", {"a": 10**30})
    assert m("a < 2.5", {"a": 2})
    assert m("a in (1.0, 2)", {"a": 1})


def test_strings_compare_by_code_point() -> None:
    assert m("s < b", {"s": "a"})
    assert m("s > a", {"s": "b"})
    assert not m("s > a", {"s": "B"})  # 'B' (66) < 'a' (97)
    assert m('s > "z"', {"s": "\u00e9"})
    assert m("s >= abc", {"s": "abc"})
    assert m("s < abd", {"s": "abc"})


def test_quoted_strings_with_separators() -> None:
    assert m('a = "x,y", b = "(", c = ")"', {"a": "x,y", "b": "(", "c": ")"})
    assert m('a in ("(", ",", ")")', {"a": ","})
    assert m('a = "with space", b = "!= < >"', {"a": "with space", "b": "!= < >"})
    assert m('a = "\\u0041"', {"a": "A"})


# --- types -------------------------------------------------------------------


def test_booleans_are_not_numbers() -> None:
    assert m("a = true", {"a": True})
    assert not m("a = 1", {"a": True})
    assert not m("a = true", {"a": 1})
    assert not m("a = false", {"a": 0})
    assert not m("a = 0", {"a": False})
    assert not m("a in (1, 2)", {"a": True})
    assert not m("a in (true)", {"a": 1})
    assert m("a in (true)", {"a": True})
    assert m("a notin (1)", {"a": True})
    assert not m("a > 0", {"a": True})
    assert not m("a >= false", {"a": True})
    assert m("a != 1", {"a": True})


@pytest.mark.parametrize("value", ["5", [5], {"x": 5}, True, None])
def test_type_mismatch(value: object) -> None:
    data = {"a": value}
    assert not m("a = 5", data)
    assert not m("a in (5, 6)", data)
    for op in ("<", "<=", ">", ">="):
        assert not m(f"a {op} 5", data)
    # decision: != and notin are the negations of = and in
    assert m("a != 5", data)
    assert m("a notin (5, 6)", data)


def test_string_vs_number() -> None:
    assert not m("a = 5", {"a": "5"})
    assert m('a = "5"', {"a": "5"})
    assert not m('a = "5"', {"a": 5})
    assert not m("a < b", {"a": 1})


def test_null() -> None:
    assert m("a = null", {"a": None})
    assert not m("a = null", {})
    assert not m("a = null", {"a": 0})
    assert not m("a = null", {"a": ""})
    assert m("a != null", {})
    assert m("a != null", {"a": 0})
    assert not m("a != null", {"a": None})
    assert m("a in (1, null)", {"a": None})
    assert not m("a in (1, null)", {})
    assert not m("a < null", {"a": None})
    assert m("a", {"a": None})
    assert not m("!a", {"a": None})


def test_objects_and_arrays_never_equal() -> None:
    assert not m("a = x", {"a": ["x"]})
    assert not m("a in (x)", {"a": {"x": 1}})
    assert m("a", {"a": []})


# --- missing fields and paths ------------------------------------------------


def test_missing_field() -> None:
    assert m("a != 1", {})
    assert m("a notin (1, 2)", {})
    assert m("!a", {})
    for expr in ("a = 1", "a == x", "a < 1", "a <= 1", "a > 1", "a >= 1", "a in (1)", "a"):
        assert not m(expr, {}), expr


def test_nested_paths() -> None:
    data: dict[str, Any] = {"owner": {"id": "u1", "team": {"name": "core"}, "n": None}}
    assert m("owner.id = u1", data)
    assert m("owner.team.name == core", data)
    assert m("owner", data)
    assert m("owner.team", data)
    assert m("owner.n", data)
    assert not m("owner.n.x", data)
    assert m("!owner.missing", data)
    assert m("!owner.id.deeper", data)  # intermediate string
    assert m("owner.id.deeper != 1", data)
    assert not m("owner.id.deeper = 1", data)


def test_non_dict_intermediate_and_data() -> None:
    assert m("!items.id", {"items": [{"id": 1}]})
    assert m("!a.b", {"a": 3})
    for data in (None, [1, 2], "text", 5, object()):
        assert m("!a", data)
        assert not m("a", data)
        assert m("a != 1", data)
        assert not m("a = 1", data)


def test_path_characters() -> None:
    assert m("a-b_c = 1, _x.y-2 = 2", {"a-b_c": 1, "_x": {"y-2": 2}})
    assert m("in = 1, notin = 2", {"in": 1, "notin": 2})


def test_matches_never_raises() -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

        __hash__ = object.__hash__

    f = compile_filter("a = 1, b < 1, c in (1, x), d != q")
    assert not f.matches({"a": Weird(), "b": object(), "c": Weird()})
    assert not f.matches({"a": float("nan")})
    assert m("a != 1", {"a": float("nan")})


# --- equalities --------------------------------------------------------------


def test_equalities() -> None:
    f = compile_filter('symbol = AAPL, price > 3, owner.id == 7, x in (1, 2), y != 3, z = "q"')
    assert f.equalities == (("symbol", "AAPL"), ("owner.id", 7), ("z", "q"))
    assert compile_filter("a, !b, c < 1").equalities == ()
    assert compile_filter("a = null, b = true").equalities == (("a", None), ("b", True))


def test_filter_object() -> None:
    f = compile_filter("a = 1")
    assert isinstance(f, Filter)
    assert f.text == "a = 1"
    assert f == compile_filter("a = 1")
    assert hash(f) == hash(compile_filter("a = 1"))
    with pytest.raises(AttributeError):
        f.text = "b"  # type: ignore[misc]


# --- errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "position", "message"),
    [
        ("", 0, "empty filter expression"),
        ("   ", 3, "empty filter expression"),
        ("price 5", 6, "expected an operator after 'price'"),
        ("owner.id ~ 5", 9, "expected an operator after 'owner.id'"),
        ("a ! b", 2, "expected an operator after 'a'"),
        ("a inx (1)", 2, "expected an operator after 'a'"),
        ("a..b = 1", 2, "expected a path segment after '.'"),
        ("a. = 1", 2, "expected a path segment after '.'"),
        ("1a = 2", 0, "expected a path"),
        (",a", 0, "expected a path"),
        ("a,", 2, "expected a path"),
        ("a = 1,, b", 6, "expected a path"),
        ("! = 1", 2, "expected a path after '!'"),
        ("a = ", 4, "expected a value after '='"),
        ("a === 1", 4, "expected a value after '=='"),
        ("a < (1)", 4, "expected a value after '<'"),
        ("a = 1 2", 6, "expected ',' or end of expression"),
        ("a = b)", 5, "expected ',' or end of expression"),
        ('a = "x"y', 7, "expected ',' or end of expression"),
        ('a = "abc', 4, "unterminated string"),
        ('a = "abc\\"', 4, "unterminated string"),
        ('a = "a\\qb"', 6, "invalid string: Invalid \\escape"),
        ('a = "\\ud800"', 4, "invalid string: lone surrogate"),
        ("a in ()", 6, "empty value list after 'in'"),
        ("a notin ( )", 10, "empty value list after 'notin'"),
        ("a in 1", 5, "expected '(' after 'in'"),
        ("a in", 4, "expected '(' after 'in'"),
        ("a in (1,)", 8, "expected a value after ','"),
        ("a in (,1)", 6, "expected a value after '('"),
        ("a in (1", 7, "expected ',' or ')' in value list"),
        ("a in (1 2)", 8, "expected ',' or ')' in value list"),
    ],
)
def test_error_positions(expr: str, position: int, message: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    err = info.value
    assert (err.position, err.message) == (position, message)
    assert str(err) == f"{message} at position {position}"
    assert isinstance(err, ValueError)


def test_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(FilterError("bad", 3)))
    assert (err.message, err.position, str(err)) == ("bad", 3, "bad at position 3")


def test_control_character_in_string() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter('a = "x\ny"')
    assert info.value.position == 6
    assert info.value.message.startswith("invalid string")


def test_length_limit() -> None:
    ok = "a = " + "x" * 96
    assert compile_filter(ok, max_length=100).matches({"a": "x" * 96})
    with pytest.raises(FilterError) as info:
        compile_filter(ok + "x", max_length=100)
    assert info.value.position == 100
    with pytest.raises(FilterError) as info:
        compile_filter("a" * 4097)
    assert info.value.position == 4096
    compile_filter("a" * 4096)


def test_clause_limit() -> None:
    compile_filter(",".join(["a"] * 64))
    with pytest.raises(FilterError) as info:
        compile_filter(",".join(["a"] * 65))
    assert info.value.position == 128
    assert info.value.message == "too many clauses (max 64)"
    with pytest.raises(FilterError) as info:
        compile_filter("a, b ,  c", max_clauses=2)
    assert info.value.position == 8


def test_huge_integer_is_an_error_not_a_crash() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("a = " + "9" * 5000, max_length=10_000)
    assert info.value.position == 4
    assert m("a < 1e999", {"a": 10**300})


# --- properties --------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 1.0, -1, "0", "1", "a", "b", "", True, False]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=8),
)
_field = st.one_of(_scalars, st.just(...), st.lists(st.integers(), max_size=2))


def _literal(v: object) -> str:
    return json.dumps(v)


def _ref_eq(field: object, lit: object) -> bool:
    if field is ...:
        return False

    def kind(x: object) -> str:
        if x is None or isinstance(x, bool | str):
            return type(x).__name__
        return "num" if isinstance(x, int | float) else "other"

    return kind(field) == kind(lit) and field == lit


@given(_field, _scalars, _scalars)
def test_in_is_or_of_equalities(field: object, x: object, y: object) -> None:
    data = {} if field is ... else {"a": field}
    eq_x = m(f"a = {_literal(x)}", data)
    eq_y = m(f"a == {_literal(y)}", data)
    assert eq_x == _ref_eq(field, x)
    assert m(f"a in ({_literal(x)}, {_literal(y)})", data) == (eq_x or eq_y)
    assert m(f"a notin ({_literal(x)},{_literal(y)})", data) == (not (eq_x or eq_y))
    assert m(f"a != {_literal(x)}", data) == (not eq_x)


@given(_scalars)
def test_equality_literal_round_trips(v: object) -> None:
    assert compile_filter(f"k = {_literal(v)}").equalities == (("k", v),)
    assert m(f"k = {_literal(v)}", {"k": v})


@given(
    st.one_of(st.integers(), st.floats(allow_nan=False)),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_ordering_matches_python(a: float, b: float) -> None:
    data = {"a": a}
    lit = _literal(b)
    assert m(f"a < {lit}", data) == (a < b)
    assert m(f"a >= {lit}", data) == (a >= b)


_GRAMMARISH = st.text(alphabet='ab.!=<>,() "\\-1e0truefalsnoi_:@\t', max_size=40)


@given(st.one_of(st.text(max_size=60), _GRAMMARISH))
def test_parse_only_raises_filter_error(text: str) -> None:
    try:
        f = compile_filter(text)
    except FilterError as err:
        assert 0 <= err.position <= len(text)
        return
    for data in ({}, {"a": 1}, {"a": {"b": "x"}}, {"b": None}, None):
        assert f.matches(data) in (True, False)
