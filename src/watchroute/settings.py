"""Configuration: every setting is a `watchroute serve` flag and a WATCHROUTE_* variable."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATCHROUTE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    database: str = "sqlite:///./watchroute.db"

    # The history horizon: a change is compacted once it is more than `history_events` changes
    # behind the latest, or (when set) older than `history_seconds`. 0 switches a limit off.
    history_events: int = Field(100_000, ge=0)
    history_seconds: float = Field(0, ge=0)
    compaction_interval: float = Field(5.0, gt=0)

    max_body_bytes: int = Field(1 << 20, ge=1)
    # Encoded events kept in memory for watchers that are close behind; older ones come from the log.
    window_events: int = Field(10_000, ge=16)
    # The SSE `retry:` hint (ms) sent at the start of every stream.
    sse_retry_ms: int = Field(2000, ge=0)
    # Most events coalesced into one socket write; bounds what a slow reader can pin in buffers.
    max_events_per_write: int = Field(512, ge=1)
    # sqlite: synchronous=NORMAL survives a process kill; FULL also survives power loss.
    sqlite_synchronous: str = Field("NORMAL", pattern="^(?i:OFF|NORMAL|FULL|EXTRA)$")
    # Seconds a stopping server gives open streams to end before it closes their sockets.
    shutdown_grace: float = Field(3.0, ge=0)
    log_level: str = "info"
