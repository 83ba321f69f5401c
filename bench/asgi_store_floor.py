"""The floor under a write that keeps watchroute's guarantees: the HTTP floor (asgi_floor.py)
plus watchroute's own store. It reads the body, parses it as JSON, commits it through the
SQLite store's group-commit writer and answers only after the commit, with the resource as
stored; it has no routing, security, schemas or problem details. What it costs a request is the
least any design of watchroute's write path could cost on this machine (bench/writes.py).

    WATCHROUTE_DATABASE=sqlite:///./floor.db .venv/bin/python -m uvicorn \
        asgi_store_floor:app --app-dir bench --port 9105 --loop uvloop --http httptools \
        --no-access-log
"""

from __future__ import annotations

import os

import orjson

from watchroute.server.uvicorn import hold_head
from watchroute.store import WriteOp
from watchroute.store.sqlite import SQLiteStore
from watchroute.wire.events import resource_json

store = SQLiteStore.from_url(os.environ.get("WATCHROUTE_DATABASE", "sqlite:///./store-floor.db"))


async def lifespan(receive, send) -> None:
    await receive()
    await store.open(lambda changes: None)
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await store.close()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    _, _, collection, id = scope["path"].split("/")  # /v1/<collection>/<id>
    op = WriteOp("put", collection, id, data=orjson.loads(b"".join(chunks)))
    [change] = await store.write([op])
    body = resource_json(
        change.id, change.revision, change.created_revision, change.data_json, change.expires_at
    )
    held = hold_head(send)
    await send(
        {
            "type": "http.response.start",
            "status": 201 if change.type == "ADDED" else 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
    if held is not None:
        held.release()
