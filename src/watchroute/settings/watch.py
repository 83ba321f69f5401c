"""The watch group: the window, coalescing, and initial states."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WatchSettings(BaseModel):
    # Older events come from the log.
    window_events: int = Field(
        10_000, ge=16, description="Encoded events kept in memory for watchers close behind"
    )
    sse_retry_ms: int = Field(
        2000, ge=0, description="The SSE retry: hint (ms) sent at the start of every stream"
    )
    # Bounds what a slow reader can pin in buffers; commits gathered under load (coalesce_ms) go
    # out once they hold this many changes.
    max_events_per_write: int = Field(512, ge=1, description="Most events coalesced into one socket write")
    # Under load, commits that come soon after the last delivery are gathered so that each
    # watcher gets them in one write: for as long as that delivery took (at most 50 ms unless
    # this is longer), and at least this many ms. The first commit after a quiet spell goes out
    # at once.
    coalesce_ms: float = Field(
        2.0, ge=0, le=1000, description="Least ms commits are gathered under load, 0 never"
    )
    # initial=true: the state goes out a page at a time, each read once the connection has taken
    # the last: at most max_events_per_write documents. A watch whose client does not read holds
    # about one page (and the socket's buffers).
    initial_page_bytes: int = Field(
        64 << 10, ge=1024, description="About how many bytes of documents one page of an initial state holds"
    )
    # Its read snapshot keeps SQLite from checkpointing past it; a watch still sending it then
    # ends with 410 Expired.
    initial_snapshot_seconds: float = Field(
        120.0, gt=0, description="Seconds one watch's initial state may take to go out"
    )
    # Each holds a database connection (a file descriptor) until it has gone out; a watch that
    # finds none free within 5 s gets 503 TooManyInitialStates.
    max_initial_states: int = Field(128, ge=1, description="Initial states sent at once")
