"""Bridges: brokers and webhooks in and out of the log (docs/bridges.md)."""

from watchroute.bridges.base import BridgeDown, Inbound, Sink, Source
from watchroute.bridges.config import BridgeConfig

__all__ = ["BridgeConfig", "BridgeDown", "Inbound", "Sink", "Source"]
