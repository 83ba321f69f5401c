"""A watch's heartbeat: its default and bounds, in seconds. Plain constants, so that the client
and the CLI share them with the server without loading what parses a watch (watch/params.py)."""

HEARTBEAT_DEFAULT = 15.0
HEARTBEAT_MIN = 1.0
HEARTBEAT_MAX = 300.0
