"""Store engines, chosen by the database URL's scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING

from watchroute.store.base import LogSlice, Page, Row, Store, WriteOp

if TYPE_CHECKING:  # the seam (store.base) is read by the core, which loads no settings
    from watchroute.settings import Settings


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


__all__ = ["LogSlice", "Page", "Row", "Store", "WriteOp", "open_store"]
