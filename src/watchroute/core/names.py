"""Names of collections and resources, and the ids the server assigns."""

from __future__ import annotations

import os
import re
import threading
import time

from watchroute.core.problems import Problem, bad_request

COLLECTION_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,252}")


def check_collection(name: str) -> str:
    if COLLECTION_RE.fullmatch(name):
        return name
    if name.startswith("_"):
        raise bad_request(
            "ReservedName",
            f"collection name {name!r} is reserved: names starting with '_' are system routes",
        )
    raise bad_request(
        "BadName",
        f"collection name {name[:80]!r} must match ^[a-z][a-z0-9_-]{{0,62}}$",
    )


def check_id(id: object) -> str:
    if isinstance(id, str) and ID_RE.fullmatch(id):
        return id
    shown = repr(id)[:80]
    raise Problem(400, "BadId", f"resource id {shown} must match ^[A-Za-z0-9][A-Za-z0-9._:-]{{0,252}}$")


_id_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> str:
    """A UUIDv7 string: time-ordered, and strictly increasing within this process.

    The 12-bit rand_a field carries a counter inside one millisecond, so ids sort in the order
    they were made even under a burst (RFC 9562, method 1).
    """
    global _last_ms, _seq
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:
                ms += 1
                _seq = 0
        else:
            _seq = 0
        _last_ms = ms
        seq = _seq
    rand_b = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
