"""Serving the app: uvicorn and what runs around it (`serve.py`), the caps on open connections
(`connections.py`), `--workers N` (`workers.py`), the log's format (`logs.py`), and every use of
uvicorn's internals (`uvicorn.py`).

Nothing is imported here: `transports/takeover.py` reads `server/uvicorn.py` alone, without the
app this package starts.
"""
