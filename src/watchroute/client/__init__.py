"""The Python client of watchroute: `AsyncClient` and `Client` (the same API, blocking), watches
that resume by themselves over SSE, WebSocket, NDJSON or long-poll, and `LiveCollection`, a local
copy of a collection kept current.

    from watchroute.client import Client

    with Client("http://127.0.0.1:8000") as client:
        client.put("stocks", "AAPL", {"price": 1})
        for event in client.watch("stocks", initial=True):
            print(event.type, event.revision, event.object)
"""

from watchroute.client._async import AsyncClient
from watchroute.client._sync import Client, Watch
from watchroute.client._watch import AsyncWatch
from watchroute.client.backoff import Backoff
from watchroute.client.errors import (
    APIError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Expired,
    NotFound,
    PreconditionFailed,
    ProtocolError,
    ServerError,
    TooLarge,
    WatchrouteError,
)
from watchroute.client.events import (
    ADDED,
    BOOKMARK,
    DELETED,
    MODIFIED,
    RESYNC,
    BatchResult,
    Resource,
    ResourceList,
    WatchEvent,
)
from watchroute.client.live import BlockingLiveCollection, LiveCollection

__all__ = [
    "ADDED",
    "BOOKMARK",
    "DELETED",
    "MODIFIED",
    "RESYNC",
    "APIError",
    "AsyncClient",
    "AsyncWatch",
    "Backoff",
    "BadRequest",
    "BatchResult",
    "BlockingLiveCollection",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Expired",
    "LiveCollection",
    "NotFound",
    "PreconditionFailed",
    "ProtocolError",
    "Resource",
    "ResourceList",
    "ServerError",
    "TooLarge",
    "Watch",
    "WatchEvent",
    "WatchrouteError",
]
