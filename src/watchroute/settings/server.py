"""The server group: where it listens, its processes, its log, and what a request may carry."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address to bind")
    port: int = Field(8000, ge=0, le=65535, description="Port")
    # One process uses one core; each has its own socket on the port (server/workers.py).
    workers: int = Field(1, ge=1, le=64, description="Processes serving the port, sharing the database")
    shutdown_grace: float = Field(
        3.0, ge=0, description="Seconds a stopping server gives open streams to end before closing them"
    )
    log_level: str = Field("info", description="critical, error, warning, info, debug or trace")
    # The audit log is JSON lines either way.
    log_format: Literal["text", "json"] = Field("text", description="text, or json: a JSON object per line")
    # Off by default: it costs every request a log write (an access_token in the query is masked).
    access_log: bool = Field(False, description="A line per request on stdout")
    max_body_bytes: int = Field(1 << 20, ge=1, description="Largest request body")
    # Streams never are compressed.
    compress_min_bytes: int = Field(
        1024,
        ge=0,
        description="A list page, read, long-poll answer or docs file this large or larger is sent "
        "gzip-encoded to a client that accepts it; 0 never",
    )
