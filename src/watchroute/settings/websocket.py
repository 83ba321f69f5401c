"""The WebSocket group: message sizes, subscriptions, pings and timeouts."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WebSocketSettings(BaseModel):
    # The server refuses bigger frames with close code 1009.
    ws_max_frame_bytes: int = Field(1 << 20, ge=1024, description="Largest message a client may send")
    ws_max_subscriptions: int = Field(
        1000, ge=1, description="Subscriptions one /v1/_watch connection may hold"
    )
    # A peer that misses the pong is dropped.
    ws_ping_interval: float = Field(20.0, ge=0, description="Seconds between protocol ping frames, 0 none")
    ws_idle_timeout: float = Field(
        60.0, ge=0, description="Seconds a /v1/_watch connection may hold no subscription, 0 for ever"
    )
    # With auth on, the connection closes with 4401 AuthTimeout.
    ws_auth_timeout: float = Field(
        10.0,
        ge=0,
        description='Seconds a /v1/_watch connection without a credential has to send {"op": "auth"}',
    )
    # permessage-deflate costs tens of KB of zlib state per connection: off unless asked for.
    ws_compression: bool = Field(False, description="permessage-deflate")
