"""A captured row as a JSON object: PostgreSQL's text output of each column, typed.

The snapshot copy and the WAL stream both read columns in PostgreSQL's text form (the copy casts
each column to text, pgoutput sends text), in sessions with the same DateStyle, TimeZone and
bytea_output (SESSION_OPTIONS), so a row gives the same document whichever of them read it.

| PostgreSQL | JSON |
|---|---|
| smallint, integer, bigint, oid | number |
| real, double precision | number (NaN and ±Infinity as strings) |
| numeric | string, exactly as PostgreSQL prints it (a double would round it) |
| boolean | true / false |
| json, jsonb | embedded |
| bytea | string, base64 |
| timestamp, timestamptz | string, ISO 8601 (timestamptz in UTC, with +00:00) |
| arrays | arrays of the element's mapping (NULL elements null) |
| NULL | null |
| anything else (text, uuid, date, interval, enums...) | string, as PostgreSQL prints it |
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import orjson

Convert = Callable[[str], Any]

# What every session that reads captured values starts with (libpq `options`).
SESSION_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c bytea_output=hex -c IntervalStyle=postgres"

_INTEGERS = {20, 21, 23, 26}  # int8, int2, int4, oid
_FLOATS = {700, 701}
_BOOL = 16
_JSON = {114, 3802}
_BYTEA = 17
_TIMESTAMPS = {1114, 1184}
_OFFSET = re.compile(r"[+-]\d\d$")


def _float(text: str) -> Any:
    value = float(text)
    return value if value == value and value not in (float("inf"), float("-inf")) else text


def _bytea(text: str) -> str:
    return base64.b64encode(bytes.fromhex(text[2:])).decode()


def _timestamp(text: str) -> str:
    if not text[:1].isdigit() or text.endswith(" BC"):
        return text  # infinity, -infinity, BC dates: as PostgreSQL prints them
    text = text.replace(" ", "T", 1)
    return text + ":00" if _OFFSET.search(text) else text


def scalar(type_oid: int) -> Convert:
    if type_oid in _INTEGERS:
        return int
    if type_oid in _FLOATS:
        return _float
    if type_oid == _BOOL:
        return lambda text: text in ("t", "true")  # pgoutput prints t, the copy's ::text true
    if type_oid in _JSON:
        return orjson.loads
    if type_oid == _BYTEA:
        return _bytea
    if type_oid in _TIMESTAMPS:
        return _timestamp
    return str


def array(element: Convert, delimiter: str = ",") -> Convert:
    return lambda text: parse_array(text, element, delimiter)


def parse_array(text: str, element: Convert, delimiter: str = ",") -> list[Any]:
    """PostgreSQL's array literal (`{1,NULL,"a,b",{2,3}}`) as nested lists."""
    if text.startswith("["):  # explicit bounds, `[0:1]={...}`: the elements are what matter
        text = text[text.index("=") + 1 :]
    stack: list[list[Any]] = []
    result: list[Any] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            stack.append([])
            i += 1
        elif c == "}":
            done = stack.pop()
            if stack:
                stack[-1].append(done)
            else:
                result = done
            i += 1
        elif c == delimiter or c.isspace():
            i += 1
        elif c == '"':
            i += 1
            chars = []
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                chars.append(text[i])
                i += 1
            i += 1
            stack[-1].append(element("".join(chars)))
        else:
            j = i
            while j < n and text[j] not in (delimiter, "}"):
                j += 1
            item = text[i:j].strip()
            stack[-1].append(None if item == "NULL" else element(item))
            i = j
    return result


def converter(type_oid: int, types: dict[int, tuple[int, str]]) -> Convert:
    """The conversion of a column of type `type_oid`; `types` maps an array type's oid to its
    element type's oid and delimiter (read from pg_type)."""
    if type_oid in types:
        elem, delimiter = types[type_oid]
        return array(converter(elem, types), delimiter)
    return scalar(type_oid)
