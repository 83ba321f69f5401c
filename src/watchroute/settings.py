"""Configuration: every setting is a `watchroute serve` flag and a WATCHROUTE_* variable."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from watchroute.security.config import SecuritySettings


class Settings(SecuritySettings):  # the security settings are in security/config.py
    model_config = SettingsConfigDict(env_prefix="WATCHROUTE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    database: str = "sqlite:///./watchroute.db"

    # The history horizon: a change is compacted once it is more than `history_events` changes
    # behind the latest, or (when set) older than `history_seconds`. 0 switches a limit off.
    history_events: int = Field(100_000, ge=0)
    history_seconds: float = Field(0, ge=0)
    compaction_interval: float = Field(5.0, gt=0)
    # TTL leases (docs/watch.md, "Leases"): the longest ttl a write may give, and how often the
    # sweep deletes the leases that have lapsed (reads leave them out at once regardless).
    max_ttl_seconds: float = Field(365 * 86400, ge=1)
    lease_sweep_interval: float = Field(0.5, gt=0, le=60)

    max_body_bytes: int = Field(1 << 20, ge=1)
    # The largest document (its JSON) a write may leave, and what a JSON patch may copy in all:
    # a patch of a few bytes can ask for a document of any size. Unset: max_body_bytes.
    max_document_bytes: int | None = Field(None, ge=1)
    # What the documents one `_batch` leaves may hold in all: each op is a revision of its own
    # with its document in the log, so a few bytes of patch ops on one large document would
    # otherwise write it again for every op. Unset: 8 * max_body_bytes.
    max_batch_bytes: int | None = Field(None, ge=1)
    # A list page, read, long-poll answer or docs file of at least this many bytes is sent
    # gzip-encoded to a client that accepts it; 0 turns compression off. Streams never are.
    compress_min_bytes: int = Field(1024, ge=0)
    # Setting a collection's schema checks its documents first; a larger collection is refused.
    schema_check_max_documents: int = Field(100_000, ge=0)
    # Encoded events kept in memory for watchers that are close behind; older ones come from the log.
    window_events: int = Field(10_000, ge=16)
    # The SSE `retry:` hint (ms) sent at the start of every stream.
    sse_retry_ms: int = Field(2000, ge=0)
    # Most events coalesced into one socket write; bounds what a slow reader can pin in buffers.
    # Commits gathered under load (coalesce_ms) go out once they hold this many changes.
    max_events_per_write: int = Field(512, ge=1)
    # Under load, commits that come soon after the last delivery are gathered so that each
    # watcher gets them in one write: for as long as that delivery took (at most 50 ms unless
    # this is longer), and at least this many ms. The first commit after a quiet spell goes out
    # at once; 0 turns gathering off altogether.
    coalesce_ms: float = Field(2.0, ge=0, le=1000)
    # initial=true: the state goes out a page at a time, each read once the connection has taken
    # the last: at most max_events_per_write documents and about this many bytes of their data.
    # A watch whose client does not read holds about one page (and the socket's buffers).
    initial_page_bytes: int = Field(64 << 10, ge=1024)
    # Seconds one watch's initial state may take to go out, since its read snapshot keeps SQLite
    # from checkpointing past it; a watch still sending it then ends with 410 Expired.
    initial_snapshot_seconds: float = Field(120.0, gt=0)
    # Initial states sent at once: each holds a database connection (a file descriptor) until it
    # has gone out; a watch that finds none free within 5 s gets 503 TooManyInitialStates.
    max_initial_states: int = Field(128, ge=1)
    # sqlite: synchronous=NORMAL survives a process kill; FULL also survives power loss.
    sqlite_synchronous: str = Field("NORMAL", pattern="^(?i:OFF|NORMAL|FULL|EXTRA)$")
    # PostgreSQL (docs/scale-out.md): the schema watchroute keeps its tables in; the most pooled
    # connections for reads (the writer and the listener have one each besides); how often an
    # instance reads the log for other instances' commits when no ring has come; how long a
    # write waits for the revision counter's lock, and a session may sit idle in a transaction.
    postgres_schema: str = Field("watchroute", pattern=r"^[a-z_][a-z0-9_]{0,46}$")
    postgres_pool_size: int = Field(10, ge=1, le=1000)
    postgres_tail_interval: float = Field(0.2, gt=0, le=60)
    postgres_lock_timeout: float = Field(5.0, gt=0)
    postgres_idle_in_transaction_timeout: float = Field(30.0, gt=0)
    # Off: writes are acknowledged before PostgreSQL has flushed them (docs/scale-out.md).
    postgres_synchronous_commit: bool = True
    # Change capture (docs/scale-out.md): tables (TABLE or SCHEMA.TABLE, comma-separated) read
    # from the WAL as read-only collections; the replication slot and publication's name (slots
    # are per PostgreSQL cluster: one name per database captured).
    capture: str = ""
    capture_slot: str = Field("watchroute_capture", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Seconds a stopping server gives open streams to end before it closes their sockets.
    shutdown_grace: float = Field(3.0, ge=0)
    log_level: str = "info"
    # Server processes on the port, sharing the SQLite file (workers.py); one uses one core.
    workers: int = Field(1, ge=1, le=64)
    # One line per request (method, path, status; an access_token in the query is masked): off
    # by default, as it costs every request a log write.
    access_log: bool = False
    # "json": every log line a JSON object, for a log shipper (the audit log always is one).
    log_format: Literal["text", "json"] = "text"

    # WebSocket. The largest message a client may send (the server refuses bigger frames with
    # close code 1009); subscriptions one `/v1/_watch` connection may hold.
    ws_max_frame_bytes: int = Field(1 << 20, ge=1024)
    ws_max_subscriptions: int = Field(1000, ge=1)
    # Seconds between protocol ping frames (a peer that misses the pong is dropped); 0 turns off.
    ws_ping_interval: float = Field(20.0, ge=0)
    # Seconds a `/v1/_watch` connection may hold no subscription before the server closes it; 0 never.
    ws_idle_timeout: float = Field(60.0, ge=0)
    # Seconds a `/v1/_watch` connection that came without a credential (auth on) has to send
    # {"op": "auth"} before the server closes it (4401 AuthTimeout); 0 never.
    ws_auth_timeout: float = Field(10.0, ge=0)
    # permessage-deflate costs tens of KB of zlib state per connection: off unless asked for.
    ws_compression: bool = False

    @property
    def document_limit(self) -> int:
        """`max_document_bytes`, or `max_body_bytes` when it is not set."""
        return self.max_body_bytes if self.max_document_bytes is None else self.max_document_bytes

    @property
    def batch_limit(self) -> int:
        """`max_batch_bytes`, or 8 * `max_body_bytes` when it is not set."""
        return 8 * self.max_body_bytes if self.max_batch_bytes is None else self.max_batch_bytes
