"""What a Python team writes today: FastAPI + sse-starlette + broadcaster (in-memory backend).

    uvicorn sse_starlette_broadcaster:app --port 9102 --loop uvloop --http httptools

`GET /sub` opens an SSE stream; `POST /pub` sends its body as one `data:` event to every stream.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broadcaster import Broadcast
from fastapi import FastAPI, Request, Response
from sse_starlette.sse import EventSourceResponse

broadcast = Broadcast("memory://")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = FastAPI(lifespan=lifespan)


@app.get("/sub")
async def sub(request: Request) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        async with broadcast.subscribe(channel="c") as subscriber:
            async for event in subscriber:
                yield {"data": event.message}

    return EventSourceResponse(events())


@app.post("/pub")
async def pub(request: Request) -> Response:
    body = await request.body()
    await broadcast.publish(channel="c", message=body.decode())
    return Response(status_code=204)
