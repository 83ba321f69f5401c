"""The PostgreSQL store: `--database postgresql://...`, any number of instances on one database."""

from __future__ import annotations

from watchroute.store.postgres.engine import PostgresStore

__all__ = ["PostgresStore"]
