"""Transports: how a watch's events are written to a client.

`delivery.py` is the loop every streaming transport shares; `stream.py` runs a streaming watch
(SSE, NDJSON) over one HTTP response, `websocket.py` over a WebSocket; `longpoll.py` answers one
poll at a time. The framings are the wire's (`watchroute.wire`).
"""
