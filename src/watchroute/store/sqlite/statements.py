"""The writer's statements, each taking many rows.

sqlite3 lets go of the GIL around every step of a statement, and a thread that lets go while the
event loop is busy may wait up to the switch interval to have it back: a step per row
(executemany) had the writer queue behind the loop once per row. Statement texts come in a few
sizes (powers of two), each prepared once and then found in the connection's statement cache.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

READ_CHUNK = 512  # ids per lookup of a group's current rows (SQLite takes 32766 parameters)
WRITE_CHUNK = 256  # rows per INSERT statement


@functools.cache
def select_rows(count: int) -> str:
    marks = ", ".join("?" * count)
    return (
        f"SELECT id, revision, created_revision, data, expires_at FROM resources "
        f"WHERE collection = ? AND id IN ({marks})"
    )


@functools.cache
def _insert_rows(head: str, width: int, count: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES " + ", ".join([row] * count)


def chunk_sizes(count: int) -> list[int]:
    """`count` as WRITE_CHUNKs and then powers of two, largest first."""
    sizes = [WRITE_CHUNK] * (count // WRITE_CHUNK)
    rest = count % WRITE_CHUNK
    bit = WRITE_CHUNK
    while rest:
        bit >>= 1
        if rest & bit:
            sizes.append(bit)
            rest -= bit
    return sizes


def insert_many(conn: sqlite3.Connection, head: str, width: int, rows: list[tuple[Any, ...]]) -> None:
    at = 0
    for size in chunk_sizes(len(rows)):
        values = [value for row in rows[at : at + size] for value in row]
        conn.execute(_insert_rows(head, width, size), values)
        at += size
