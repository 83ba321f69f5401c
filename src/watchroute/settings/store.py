"""The store group: the database, the history horizon, documents and leases, PostgreSQL and
change capture (docs/scale-out.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StoreSettings(BaseModel):
    database: str = Field(
        "sqlite:///./watchroute.db", description="sqlite:///PATH or postgresql://USER@HOST/DB"
    )
    # The history horizon: a change is compacted once it is more than `history_events` changes
    # behind the latest, or (when set) older than `history_seconds`. 0 switches a limit off.
    history_events: int = Field(100_000, ge=0, description="Changes kept in the log")
    history_seconds: float = Field(0, ge=0, description="Seconds of changes kept, 0 for no limit")
    compaction_interval: float = Field(5.0, gt=0, description="Seconds between compactions of the log")
    # TTL leases (docs/watch.md, "Leases"): reads leave lapsed leases out at once regardless.
    max_ttl_seconds: float = Field(365 * 86400, ge=1, description="Longest ttl a write may give")
    lease_sweep_interval: float = Field(
        0.5, gt=0, le=60, description="Seconds between sweeps of lapsed leases"
    )
    # What a JSON patch may copy in all too: a patch of a few bytes can ask for a document of any
    # size. Unset: max_body_bytes.
    max_document_bytes: int | None = Field(
        None, ge=1, description="Largest document a write may leave (default: max_body_bytes)"
    )
    # Each op of a `_batch` is a revision of its own with its document in the log, so a few bytes
    # of patch ops on one large document would otherwise write it again for every op.
    max_batch_bytes: int | None = Field(
        None,
        ge=1,
        description="What the documents of one _batch may hold in all (default: 8 x max_body_bytes)",
    )
    # Setting a collection's schema checks its documents first; a larger collection is refused.
    schema_check_max_documents: int = Field(
        100_000, ge=0, description="Most documents checked when a schema is set"
    )
    # NORMAL survives a process kill; FULL also survives power loss.
    sqlite_synchronous: str = Field(
        "NORMAL",
        pattern="^(?i:OFF|NORMAL|FULL|EXTRA)$",
        description="SQLite's synchronous: OFF, NORMAL, FULL or EXTRA",
    )
    postgres_schema: str = Field(
        "watchroute",
        pattern=r"^[a-z_][a-z0-9_]{0,46}$",
        description="PostgreSQL schema of watchroute's tables",
    )
    # The writer and the listener have one connection each besides.
    postgres_pool_size: int = Field(
        10, ge=1, le=1000, description="Most pooled PostgreSQL connections for reads"
    )
    postgres_tail_interval: float = Field(
        0.2,
        gt=0,
        le=60,
        description="Seconds between reads of the log for other instances' commits, without a ring",
    )
    postgres_lock_timeout: float = Field(
        5.0, gt=0, description="Seconds a write waits for the revision counter's lock"
    )
    postgres_idle_in_transaction_timeout: float = Field(
        30.0, gt=0, description="Seconds a PostgreSQL session may sit idle in a transaction"
    )
    # Off: writes are acknowledged before PostgreSQL has flushed them (docs/scale-out.md).
    postgres_synchronous_commit: bool = Field(
        True, description="Acknowledge writes once PostgreSQL has flushed them"
    )
    # Tables read from the WAL as read-only collections.
    capture: str = Field(
        "", description="PostgreSQL tables to capture as collections, e.g. orders,sales.orders"
    )
    # Slots are per PostgreSQL cluster: one name per database captured.
    capture_slot: str = Field(
        "watchroute_capture",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Replication slot and publication name",
    )
