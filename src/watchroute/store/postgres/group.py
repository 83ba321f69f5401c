"""What one group commit sends: the reads under the counter's lock, then the writes.

The parameters go in PostgreSQL's binary format (`%b`): the text format escapes every element of
an array in Python, a bytea one byte at a time, which cost a group more CPU than everything
else it does. A group of many changes (a large `_batch`, a captured transaction) is written with
COPY in binary, a round trip per table, instead of arrays taken apart by `unnest`: COPY cannot
join the pipeline, but it spares the instance the arrays' encoding and PostgreSQL their
decoding, a few times cheaper per row. Its resources are then updated where they existed and
inserted where they did not (the group read which), rather than upserted: an UPDATE joined to
the copied rows costs PostgreSQL half of what an INSERT ... ON CONFLICT does per row, and more
of its updates stay on their page (schema.py gives `resources` room for them).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import psycopg

from watchroute.core.change import Change
from watchroute.store import ops

# Changes in a group from which its writes go by COPY rather than in the pipeline.
COPY_FROM = 256

LOG_COLUMNS = "revision, ts, type, collection, id, created_revision, data, prev, expires_at"
LOCK_COUNTER = "SELECT value FROM meta WHERE key = 'revision' FOR UPDATE"
CURRENT_ROWS = (
    "SELECT collection, id, revision, created_revision, data, expires_at FROM resources "
    "JOIN unnest(%b::text[], %b::text[]) AS wanted (collection, id) USING (collection, id)"
)
LOG_AFTER = f"SELECT {LOG_COLUMNS} FROM log WHERE revision > %b ORDER BY revision LIMIT %b"
_INSERT_LOG = (
    f"INSERT INTO log ({LOG_COLUMNS}) SELECT * FROM unnest(%b::bigint[], %b::float8[], %b::text[], "
    "%b::text[], %b::text[], %b::bigint[], %b::bytea[], %b::bytea[], %b::float8[])"
)
_UPSERT = (
    "ON CONFLICT (collection, id) DO UPDATE SET revision = excluded.revision, "
    "created_revision = excluded.created_revision, data = excluded.data, expires_at = excluded.expires_at"
)
_UPSERT_RESOURCES = (
    "INSERT INTO resources (collection, id, revision, created_revision, data, expires_at) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bytea[], %b::float8[]) "
    + _UPSERT
)
_DELETE_RESOURCES = (
    "DELETE FROM resources r USING unnest(%b::text[], %b::text[]) AS gone (collection, id) "
    "WHERE r.collection = gone.collection AND r.id = gone.id"
)
_SET_COUNTER = "UPDATE meta SET value = %b WHERE key = 'revision'"
# Named positions (change capture's LSN, a bridge's broker position): with the changes they came
# with, in their transaction (store/base.py, Position).
_SET_POSITIONS = (
    "INSERT INTO positions SELECT * FROM unnest(%b::text[], %b::text[]) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
# A large group's resources, copied in, then written in two statements: updated where they
# `existed` when the group began, inserted where not. Made on the writer's connection the first
# time it is needed; its rows go at the commit.
_STAGED = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS staged_resources (collection text, id text, revision bigint, "
    "created_revision bigint, data bytea, expires_at double precision, existed boolean) "
    "ON COMMIT DELETE ROWS"
)
_COPY_LOG = f"COPY log ({LOG_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_LOG_TYPES = ["int8", "float8", "text", "text", "text", "int8", "bytea", "bytea", "float8"]
_COPY_STAGED = "COPY staged_resources FROM STDIN (FORMAT BINARY)"
_STAGED_TYPES = ["text", "text", "int8", "int8", "bytea", "float8", "bool"]
_UPDATE_STAGED = (
    "UPDATE resources r SET revision = s.revision, created_revision = s.created_revision, "
    "data = s.data, expires_at = s.expires_at FROM staged_resources s "
    "WHERE s.existed AND r.collection = s.collection AND r.id = s.id"
)
_INSERT_STAGED = (
    "INSERT INTO resources SELECT collection, id, revision, created_revision, data, expires_at "
    "FROM staged_resources WHERE NOT existed"
)


def log_changes(rows: list[tuple[Any, ...]]) -> list[Change]:
    return [
        Change(rev, type, collection, rid, created, data, prev, ts, expires_at=expires)
        for rev, ts, type, collection, rid, created, data, prev, expires in rows
    ]


def copy_writes(
    conn: psycopg.Connection[Any],
    changes: list[Change],
    kept: list[Change],
    existing: Container[tuple[str, str]],
) -> None:
    """A large group's log entries and resources, by COPY, outside the pipeline; `queue_writes`
    with `copied` then writes the resources from where they were copied. `existing`: the
    resources there were when the group began."""
    with conn.cursor() as cur:
        with cur.copy(_COPY_LOG) as copy:
            copy.set_types(_LOG_TYPES)
            write = copy.write_row
            for c in changes:
                write(ops.log_row(c))
        if kept:
            cur.execute(_STAGED)
            with cur.copy(_COPY_STAGED) as copy:
                copy.set_types(_STAGED_TYPES)
                write = copy.write_row
                for c in kept:
                    existed = (c.collection, c.id) in existing
                    write(
                        (
                            c.collection,
                            c.id,
                            c.revision,
                            c.created_revision,
                            c.data_json,
                            c.expires_at,
                            existed,
                        )
                    )


def queue_writes(
    conn: psycopg.Connection[Any],
    changes: list[Change],
    kept: list[Change],
    gone: list[tuple[str, str]],
    revision: int,
    positions: dict[str, str],
    copied: bool,
) -> None:
    """The group's writes, queued in the caller's pipeline with the COMMIT that follows them;
    with `copied`, the log entries and resources are in already (`copy_writes`)."""
    if copied:
        if kept:
            conn.execute(_UPDATE_STAGED)
            conn.execute(_INSERT_STAGED)
    else:
        conn.execute(
            _INSERT_LOG,
            (
                [c.revision for c in changes],
                [c.ts for c in changes],
                [c.type for c in changes],
                [c.collection for c in changes],
                [c.id for c in changes],
                [c.created_revision for c in changes],
                [c.data_json for c in changes],
                [c.prev_json for c in changes],
                [c.expires_at for c in changes],
            ),
        )
        if kept:
            conn.execute(
                _UPSERT_RESOURCES,
                (
                    [c.collection for c in kept],
                    [c.id for c in kept],
                    [c.revision for c in kept],
                    [c.created_revision for c in kept],
                    [c.data_json for c in kept],
                    [c.expires_at for c in kept],
                ),
            )
    if gone:
        conn.execute(_DELETE_RESOURCES, ([k[0] for k in gone], [k[1] for k in gone]))
    if positions:
        conn.execute(_SET_POSITIONS, (list(positions), list(positions.values())))
    conn.execute(_SET_COUNTER, (revision,))
