"""The PostgreSQL schema: created on first start, migrated forward, never run backwards.

Every table lives in one schema of its own (`watchroute` unless `postgres_schema` says
otherwise), so that watchroute can share a database with the application that uses it. The
schema's version is a row of `meta`; the migrations run under a transaction-scoped advisory lock,
so instances that start together take turns: the first migrates, the others find it done.
An instance refuses a schema newer than it knows: an older release would write rows that a newer
one reads wrongly.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

# Each entry brings the schema from version i to i + 1. Statements name no schema: they run
# with search_path set to watchroute's own (connect.py).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
    -- 'revision' is the counter row: every write transaction updates it, which serialises
    -- writers in commit order and makes the revisions gap-free (a rollback undoes it).
    INSERT INTO meta VALUES ('revision', 0), ('compacted', 0), ('schema_version', 0);
    CREATE TABLE resources (
        collection text NOT NULL,
        id text NOT NULL,
        revision bigint NOT NULL,
        created_revision bigint NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (collection, id)
    );
    CREATE TABLE log (
        revision bigint PRIMARY KEY,
        ts double precision NOT NULL,
        type text NOT NULL,
        collection text NOT NULL,
        id text NOT NULL,
        created_revision bigint NOT NULL,
        data bytea NOT NULL,
        prev bytea
    );
    CREATE INDEX log_by_collection ON log (collection, revision);
    CREATE TABLE api_keys (
        id text PRIMARY KEY,
        digest bytea NOT NULL,
        subject text NOT NULL,
        scopes text NOT NULL,
        name text NOT NULL DEFAULT '',
        created double precision NOT NULL,
        expires double precision,
        revoked double precision
    );
    """,
    # 2: TTL leases. A resource's lease expiry (NULL: permanent), indexed for the sweep's range
    # read; in the log, the expiry a change left (on a DELETED: the lapse that made it).
    """
    ALTER TABLE resources ADD COLUMN expires_at double precision;
    ALTER TABLE log ADD COLUMN expires_at double precision;
    CREATE INDEX resources_by_expiry ON resources (expires_at) WHERE expires_at IS NOT NULL;
    """,
    # 3: named positions of followers of something outside the store (change capture's LSN, a
    # bridge's broker position), each written in the transaction of what it applied. Capture's
    # LSN moves here from meta.
    """
    CREATE TABLE positions (name text PRIMARY KEY, value text NOT NULL);
    INSERT INTO positions SELECT 'capture', value::text FROM meta WHERE key = 'capture_lsn';
    DELETE FROM meta WHERE key = 'capture_lsn';
    """,
    # 4: room on each page of `resources` for a row's next version. An update that finds it
    # there and changes no indexed column adds no index entry (a HOT update): half the cost of a
    # large group's updates. Pages written from now on keep it; older ones as they are rewritten.
    """
    ALTER TABLE resources SET (fillfactor = 70);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    pass


def lock_key(schema: str, purpose: str) -> sql.Composed:
    """An advisory lock's key: one per schema and purpose (migrate, compact)."""
    return sql.SQL("hashtextextended({}, 0)").format(sql.Literal(f"watchroute:{schema}:{purpose}"))


def migrate(conn: psycopg.Connection, schema: str) -> int:
    """Create or bring forward the schema; return its version. Raises SchemaTooNew."""
    with conn.transaction():
        conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(lock_key(schema, "migrate")))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
        version = 0
        if exists and exists[0]:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the database's schema {schema!r} is at version {version}, newer than this "
                f"release knows ({SCHEMA_VERSION}): upgrade watchroute, or point it at another "
                "schema (WATCHROUTE_POSTGRES_SCHEMA)"
            )
        for step in MIGRATIONS[version:]:
            conn.execute(step)
        if version < SCHEMA_VERSION:
            conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        return SCHEMA_VERSION
