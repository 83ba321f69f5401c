"""The captured tables: their collection names, their ids, and whether they can be captured.

`orders` is `public.orders` and is the collection `orders`; `sales.orders` is the collection
`sales-orders` (schema and table joined by `-`). A resource's id is its primary key: a single
column's text, or the columns' texts in key order joined by `:`. A key value made only of
letters, digits, `_` and `-` (and starting with a letter or digit) is used as it is; any other
(`a@b.com`, `-5`, a value with `:` or `.`) is `x.` followed by the hex of its UTF-8 bytes, so
that every id is a valid resource id and no two keys share one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

from watchroute.capture import values
from watchroute.core.names import COLLECTION_RE

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class CaptureRefused(RuntimeError):
    """The capture cannot start; the message says what to run to fix it."""


@dataclass(slots=True)
class Table:
    schema: str
    name: str
    collection: str
    key: list[str] = field(default_factory=list)  # primary key columns, in key order
    # column -> its conversion from PostgreSQL's text form (values.py)
    columns: dict[str, values.Convert] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.name}"'


def parse(spec: str) -> list[Table]:
    """`orders,sales.orders` as tables; raises CaptureRefused for a name that cannot be one."""
    tables: dict[str, Table] = {}
    for raw in (part.strip() for part in spec.split(",")):
        if not raw:
            continue
        schema, _, name = raw.rpartition(".")
        schema = schema or "public"
        if not _NAME.fullmatch(schema) or not _NAME.fullmatch(name):
            raise CaptureRefused(
                f"cannot capture {raw!r}: name a table as TABLE or SCHEMA.TABLE, in lower case "
                "(letters, digits, _), as an unquoted identifier"
            )
        collection = name if schema == "public" else f"{schema}-{name}"
        if not COLLECTION_RE.fullmatch(collection):
            raise CaptureRefused(f"cannot capture {raw!r}: its collection name {collection!r} is not valid")
        tables[collection] = Table(schema, name, collection)
    return list(tables.values())


def key_part(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else "x." + text.encode().hex()


def resource_id(key_texts: list[str]) -> str:
    return ":".join(key_part(text) for text in key_texts)


def check(conn: psycopg.Connection[Any], tables: list[Table]) -> None:
    """Fill in each table's key and columns; raise CaptureRefused, saying what to run, when
    logical decoding is off or a table cannot be captured."""
    # One row always (psycopg types fetchone() as optional, hence the ignore).
    (level,) = conn.execute("SHOW wal_level").fetchone()  # type: ignore[misc]
    if level != "logical":
        raise CaptureRefused(
            f"change capture needs wal_level = logical (it is {level}): run "
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        )
    (can_replicate,) = conn.execute(
        "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()  # type: ignore[misc]  # one row always
    if not can_replicate:
        # One row always (psycopg types fetchone() as optional, hence the ignore).
        (user,) = conn.execute("SELECT current_user").fetchone()  # type: ignore[misc]
        raise CaptureRefused(
            f"change capture needs a role that may replicate: run ALTER ROLE {user} REPLICATION"
        )
    for table in tables:
        row = conn.execute(
            "SELECT c.oid, c.relreplident, has_table_privilege(c.oid, 'SELECT') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (table.schema, table.name),
        ).fetchone()
        if row is None:
            raise CaptureRefused(
                f"cannot capture {table.schema}.{table.name}: there is no such table "
                "(create it first, or correct --capture)"
            )
        oid, _, can_select = row
        if not can_select:
            raise CaptureRefused(
                f"cannot capture {table.schema}.{table.name}: no permission to read it: run "
                f"GRANT SELECT ON {table.qualified} TO the role in the database URL"
            )
        key = conn.execute(
            "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY "
            "AS k (attnum, ord) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord",
            (oid,),
        ).fetchall()
        if not key:
            raise CaptureRefused(
                f"cannot capture {table.schema}.{table.name}: it has no primary key, which gives "
                f"each row its id and identifies it in updates and deletes: run ALTER TABLE "
                f"{table.qualified} ADD PRIMARY KEY (...)"
            )
        table.key = [name for (name,) in key]
        table.columns = columns(conn, oid)


def columns(conn: psycopg.Connection[Any], relid: int) -> dict[str, values.Convert]:
    rows = conn.execute(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        (relid,),
    ).fetchall()
    types = array_types(conn, [oid for _, oid in rows])
    return {name: values.converter(oid, types) for name, oid in rows}


def array_types(conn: psycopg.Connection[Any], oids: list[int]) -> dict[int, tuple[int, str]]:
    """Each array type among `oids`: its element type and delimiter."""
    rows = conn.execute(
        "SELECT t.oid, t.typelem, e.typdelim FROM pg_type t JOIN pg_type e ON e.oid = t.typelem "
        "WHERE t.oid = ANY(%s) AND t.typcategory = 'A'",
        (oids,),
    ).fetchall()
    return {oid: (elem, delim) for oid, elem, delim in rows}
