"""pgoutput's messages (protocol version 1), as PostgreSQL's logical replication sends them.

psycopg2 carries the replication protocol (the stream, keepalives, feedback); what it hands on is
the payload of each XLogData message, which this module reads. Version 1 sends a transaction
only once it has committed, whole, between Begin and Commit; a Relation message comes before the
first change of a table in a session and again after its shape changed (ALTER TABLE), so the
columns of the changes that follow are always those of the latest one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# One column of a tuple: its text, None for NULL, UNCHANGED for a TOAST value the update left
# as it was (PostgreSQL did not send it).
UNCHANGED = object()
Tuple = list[object]

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")


@dataclass(slots=True)
class Begin:
    final_lsn: int


@dataclass(slots=True)
class Commit:
    end_lsn: int  # the position after the commit: what is acknowledged once applied


@dataclass(slots=True)
class Relation:
    relid: int
    schema: str
    name: str
    columns: list[tuple[str, int]]  # (name, type oid)


@dataclass(slots=True)
class RowChange:
    kind: str  # "insert" | "update" | "delete"
    relid: int
    new: Tuple | None
    old: Tuple | None  # the old key (or whole old row) when PostgreSQL sent it


@dataclass(slots=True)
class Truncate:
    relids: list[int]


Message = Begin | Commit | Relation | RowChange | Truncate | None


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> str:
        c = chr(self.data[self.pos])
        self.pos += 1
        return c

    def i16(self) -> int:
        (v,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return v

    def i32(self) -> int:
        (v,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return v

    def u32(self) -> int:
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return v

    def i64(self) -> int:
        (v,) = _I64.unpack_from(self.data, self.pos)
        self.pos += 8
        return v

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        text = self.data[self.pos : end].decode()
        self.pos = end + 1
        return text

    def tuple(self) -> Tuple:
        columns: Tuple = []
        for _ in range(self.i16()):
            kind = self.byte()
            if kind == "t":
                size = self.i32()
                columns.append(self.data[self.pos : self.pos + size].decode())
                self.pos += size
            elif kind == "n":
                columns.append(None)
            elif kind == "u":
                columns.append(UNCHANGED)
            else:  # "b": binary, which is only sent when asked for
                raise ValueError(f"unexpected tuple column kind {kind!r}")
        return columns


def decode(payload: bytes) -> Message:
    """One message; None for those capture has no use for (origin, type, logical message)."""
    r = _Reader(payload)
    tag = r.byte()
    if tag == "B":
        return Begin(r.i64())
    if tag == "C":
        r.byte()  # flags
        r.i64()  # the commit's own LSN
        return Commit(r.i64())
    if tag == "R":
        relid = r.u32()
        schema, name = r.string(), r.string()
        r.byte()  # replica identity
        columns = []
        for _ in range(r.i16()):
            r.byte()  # flags: part of the key
            column = r.string()
            columns.append((column, r.u32()))
            r.i32()  # type modifier
        return Relation(relid, schema, name, columns)
    if tag == "I":
        relid = r.u32()
        r.byte()  # "N"
        return RowChange("insert", relid, r.tuple(), None)
    if tag == "U":
        relid = r.u32()
        old = None
        kind = r.byte()
        if kind in ("K", "O"):
            old = r.tuple()
            kind = r.byte()
        return RowChange("update", relid, r.tuple(), old)
    if tag == "D":
        relid = r.u32()
        r.byte()  # "K" or "O"
        return RowChange("delete", relid, None, r.tuple())
    if tag == "T":
        count = r.i32()
        r.byte()  # options (CASCADE, RESTART IDENTITY)
        return Truncate([r.u32() for _ in range(count)])
    return None


def lsn(text: str) -> int:
    """`16/B374D848` as a number."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
