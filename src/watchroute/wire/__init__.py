"""What goes on the wire: encoded events, the SSE, NDJSON and WebSocket framings, merge-patch
diffs and problem details as bytes.

The package imports nothing here so that a transport loads only the framings it uses; the
client shares `mergepatch`, the one part of the wire both sides apply.
"""
