"""A page of an initial state, taken from the rows a snapshot scanned: the same for every engine.

A snapshot reads its collection in id order, `SCAN_ROWS` at a time, and a filter may keep few of
them; a page ends at `max_rows` rows or `max_bytes` of data, whichever comes first, so that a
watcher that does not read holds about one page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from watchroute.core.filter import Filter
from watchroute.store.base import Row

SCAN_ROWS = 1000  # rows one read of a snapshot scans


class ScannedPage(NamedTuple):
    rows: list[Row]
    last_id: str | None  # the last id scanned, to read on after (None: nothing was)
    exhausted: bool  # the scan reached the collection's end


def fill_page(
    collection: str, found: Iterable[Any], flt: Filter | None, max_rows: int, max_bytes: int
) -> ScannedPage:
    """The rows of `found` (id, revision, created_revision, data, expires_at; at most
    SCAN_ROWS, in id order) that `flt` keeps, until the page is full."""
    rows: list[Row] = []
    size = scanned = 0
    last = None
    for rid, rev, created, data, expires in found:
        scanned += 1
        last = rid
        row = Row(collection, rid, rev, created, data, expires)
        if flt is not None:
            if not flt.matches(row.data):
                continue
            row._data = None  # only the encoded data goes out: the parsed one is garbage now
        rows.append(row)
        size += len(data)
        if len(rows) >= max_rows or size >= max_bytes:
            return ScannedPage(rows, last, False)
    return ScannedPage(rows, last, scanned < SCAN_ROWS)
