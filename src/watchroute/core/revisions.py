"""Revisions given by clients: `since`, `Last-Event-ID`, `If-Match`, a batch op's `if_match`,
a continue token's revision. One parser for all of them, so that none answers 500 to an absurd
value: int() refuses strings of more than 4300 digits with a ValueError, and SQLite's INTEGER
ends at 2**63-1."""

from __future__ import annotations

from watchroute.core.problems import Problem, bad_request

# The largest revision a store can hold (SQLite's INTEGER); no store gets near it.
MAX_REVISION = 2**63 - 1
_MAX_DIGITS = len(str(MAX_REVISION))


def parse_revision(value: object, name: str, *, reason: str = "BadParameter", text: bool = True) -> int:
    """`value` (ASCII digits, or an integer from a JSON document) as a revision in
    0..MAX_REVISION; 400 `reason` for anything else, naming `name`. `text=False`: a JSON
    member that takes a number only."""
    if isinstance(value, str) and text:
        # isascii too: str.isdigit() accepts "²" (latin-1 headers carry it), which int() refuses
        if value.isascii() and value.isdigit():
            digits = value.lstrip("0") or "0"
            # The length first: int() of thousands of digits raises, and costs time before that.
            if len(digits) <= _MAX_DIGITS and int(digits) <= MAX_REVISION:
                return int(digits)
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REVISION:
        return value
    raise invalid_revision(value, name, reason=reason)


def invalid_revision(
    value: object, name: str, expected: str | None = None, *, reason: str = "BadParameter"
) -> Problem:
    # repr() of an integer of thousands of digits raises too
    bits = value.bit_length() if type(value) is int else 0
    shown = f"an integer of {bits} bits" if bits > 64 else repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    what = expected or f"a revision (an integer from 0 to {MAX_REVISION})"
    return bad_request(reason, f"{name} must be {what}, not {shown}")
