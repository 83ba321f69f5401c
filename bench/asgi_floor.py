"""The floor under every REST write: an ASGI app that reads the request body and answers 201 with
a small JSON body, and does nothing else. Served by uvicorn with httptools and uvloop, as
watchroute is, and loaded by the same wrk script, it shows what the HTTP server alone costs per
request on this machine (bench/writes.py). Like watchroute, it has uvicorn write each response's
head and body in one write (`server/uvicorn.py`), so that the floor stays a floor.

    .venv/bin/python -m uvicorn asgi_floor:app --app-dir bench --port 9104 --loop uvloop \
        --http httptools --no-access-log
"""

from __future__ import annotations

from watchroute.server.uvicorn import hold_head

ANSWER = b'{"id":"x","revision":1,"created_revision":1,"data":{}}'
START = {
    "type": "http.response.start",
    "status": 201,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())],
}


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # the whole body, as a real write must read it
        message = await receive()
        more = message.get("more_body", False)
    held = hold_head(send)
    await send(START)
    await send({"type": "http.response.body", "body": ANSWER})
    if held is not None:
        held.release()
