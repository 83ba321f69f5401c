"""The IN runner: each broker message becomes a write with its position, then is acknowledged.

Filled in with the sources (sources/<broker>.py). Until then an IN bridge reports itself failed.
"""

from __future__ import annotations

from watchroute.bridges.base import Source
from watchroute.bridges.state import Bridge
from watchroute.store import Store


async def run_inbound(bridge: Bridge, source: Source, store: Store) -> None:
    """Read `source` from the stored position and write each message to the log, for ever.

    Called by the manager with the source connected; raises BridgeDown when the broker goes
    away (the manager reconnects with capped backoff) and returns only when cancelled.
    """
    raise NotImplementedError("inbound bridges are not available in this build")
