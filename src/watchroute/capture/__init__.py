"""Change capture (`--capture orders,customers`): PostgreSQL tables as collections, from the WAL.

tables.py names and checks the tables, values.py types their columns, pgoutput.py reads the
stream's messages, stream.py owns the replication slot (copy, then stream) on a thread, and
capturer.py leads (one instance at a time) and writes each committed transaction to the store.
"""

from __future__ import annotations

from watchroute.core.problems import Problem


def captured_collection(collection: str) -> Problem:
    """A REST write to a captured collection: the table is the truth, changed by its application."""
    return Problem(
        405,
        "CapturedCollection",
        f"{collection} is captured from a PostgreSQL table: it is read-only here; change the table",
        headers={"Allow": "GET, HEAD"},
    )
