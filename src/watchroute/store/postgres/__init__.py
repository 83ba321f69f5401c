"""The PostgreSQL store: `--database postgresql://...`, any number of instances on one database."""

from __future__ import annotations

from .engine import PostgresStore

__all__ = ["PostgresStore"]
