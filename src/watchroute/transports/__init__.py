"""Transports: how a watch's events are framed and written to a client.

`stream.py` runs a streaming watch (SSE, NDJSON) over one HTTP response; `sse.py` and
`ndjson.py` are its framings; `longpoll.py` answers one poll at a time.
"""
