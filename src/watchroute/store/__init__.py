"""Store engines, chosen by the database URL's scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING

from watchroute.store.base import APIKeyTable, LogSlice, Page, Position, Row, Store, WriteOp

if TYPE_CHECKING:  # the seam (store.base) is read by the core, which loads no settings
    from watchroute.settings import Settings


def open_store(settings: Settings) -> Store:
    url = settings.database
    if url.startswith("sqlite:"):
        from watchroute.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(
            url,
            synchronous=settings.sqlite_synchronous,
            max_document_bytes=settings.document_limit,
            max_batch_bytes=settings.batch_limit,
        )
    if url.startswith(("postgresql://", "postgres://")):
        from watchroute.store.postgres import PostgresStore

        return PostgresStore.from_settings(settings)
    raise ValueError(f"unsupported database URL {url!r}: expected sqlite:///PATH or postgresql://...")


def open_api_keys(database: str, postgres_schema: str = "watchroute") -> APIKeyTable:
    """The API keys' table in the database at `database`: the SQLite file, or PostgreSQL's
    schema. Usable without an open store: the CLI manages keys while servers run."""
    if database.startswith(("postgresql://", "postgres://")):
        from watchroute.store.postgres.apikeys import PostgresAPIKeys

        return PostgresAPIKeys(database, postgres_schema)
    from watchroute.store.sqlite.apikeys import SQLiteAPIKeys

    return SQLiteAPIKeys(database)


__all__ = [
    "APIKeyTable",
    "LogSlice",
    "Page",
    "Position",
    "Row",
    "Store",
    "WriteOp",
    "open_api_keys",
    "open_store",
]
