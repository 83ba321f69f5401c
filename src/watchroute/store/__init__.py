"""Store engines, chosen by the database URL's scheme."""

from __future__ import annotations

from watchroute.settings import Settings
from watchroute.store.base import LogSlice, Page, Position, Row, Store, WriteOp


def open_store(settings: Settings) -> Store:
    url = settings.database
    if url.startswith("sqlite:"):
        from watchroute.store.sqlite.engine import SQLiteStore

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


__all__ = ["LogSlice", "Page", "Position", "Row", "Store", "WriteOp", "open_store"]
